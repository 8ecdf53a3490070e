// qcow2 splice reads: every kind of run (data, zero clusters, unallocated
// with and without a backing file, a backing file shorter than the image,
// compressed clusters) delivers what co_preadv reads, for ranges that start,
// end and cross anywhere.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <random>

#include "block/core/graph.h"
#include "strata/drive.h"
#include "unit/block/drivers/temp_dir.h"
#include "unit/block/splice_check.h"

namespace strata {
namespace {

using nlohmann::json;
using testing::expect_splice_equals_read;
using testing::expect_splice_equals_read_everywhere;
using testing::splice_range;

constexpr uint64_t kCluster = 64 * 1024;
constexpr uint64_t kImageSize = 4 * 1024 * 1024;
// Shorter than the image and not a multiple of the cluster size.
constexpr uint64_t kBackingSize = 1024 * 1024 + 3000;

bool have_qemu() {
  return std::system("qemu-io --version >/dev/null 2>&1") == 0;
}

std::vector<uint8_t> random_bytes(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

std::string run_output(const std::string& cmd) {
  std::string out;
  std::FILE* p = popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  pclose(p);
  return out;
}

class Qcow2SpliceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_qemu()) GTEST_SKIP() << "qemu-img/qemu-io not installed";
  }

  // An image with compressed, zero, data and unallocated runs (qemu-io
  // writes the compressed and zero clusters, Strata the data, partly as
  // copy-on-write of backing clusters).
  std::string make_image(bool with_backing) {
    std::string img = dir_.file(with_backing ? "overlay.qcow2" : "alone.qcow2");
    std::string create = "qemu-img create -q -f qcow2 -o cluster_size=65536 ";
    if (with_backing) {
      std::string base = dir_.file("base.raw");
      auto data = random_bytes(kBackingSize, 5);
      std::ofstream(base, std::ios::binary)
          .write(reinterpret_cast<const char*>(data.data()), kBackingSize);
      create += "-b " + base + " -F raw ";
    }
    std::string cmd = create + img + " " + std::to_string(kImageSize) +
                      " && qemu-io -f qcow2 -c 'write -c -P 0x5c 192k 64k'"
                      " -c 'write -c -P 0xa7 3M 64k' -c 'write -z 256k 128k'"
                      " -c 'write -z 960k 64k' -c 'write -P 0x33 2M 64k' " +
                      img + " >/dev/null";
    EXPECT_EQ(std::system(cmd.c_str()), 0);
    auto d = open(img);
    if (!d) return img;
    for (auto [off, len] : {std::pair<uint64_t, uint64_t>{0, 100000},
                            {500000, 70000},
                            {1024 * 1024 + kCluster + 100, 200000},
                            {3 * 1024 * 1024 + kCluster, kCluster}}) {
      EXPECT_TRUE(d->write(off, random_bytes(len, static_cast<unsigned>(off))));
    }
    d->close();
    return img;
  }

  std::unique_ptr<Drive> open(const std::string& img, json file_extra = json::object()) {
    json file = {{"driver", "file"}, {"filename", img}};
    file.update(file_extra);
    auto r = engine_.run(Drive::co_open(engine_, {{"driver", "qcow2"}, {"file", file}}));
    EXPECT_TRUE(r) << r.error().message;
    return r ? std::move(*r) : nullptr;
  }

  testing::TempDir dir_;
  Engine engine_;
};

TEST_F(Qcow2SpliceTest, ImageHoldsEveryKindOfRun) {
  std::string img = make_image(true);
  std::string map = run_output("qemu-img map --output=json " + img);
  // Compressed clusters are data without a host offset.
  EXPECT_NE(map.find("\"depth\": 0, \"present\": true, \"zero\": false, \"data\": true}"),
            std::string::npos)
      << map;
  EXPECT_NE(map.find("\"depth\": 0, \"present\": true, \"zero\": true, \"data\": false"),
            std::string::npos)
      << map;
  EXPECT_NE(map.find("\"depth\": 1, \"present\": true, \"zero\": false, \"data\": true"),
            std::string::npos)
      << map;
  EXPECT_NE(map.find("\"depth\": 0, \"present\": true, \"zero\": false, \"data\": true"),
            std::string::npos)
      << map;
  EXPECT_NE(map.find("\"present\": false"), std::string::npos) << map;
  EXPECT_EQ(std::system(("qemu-img check -q " + img).c_str()), 0);
}

TEST_F(Qcow2SpliceTest, RangesOverABackingFileMatchPreadv) {
  auto d = open(make_image(true));
  ASSERT_TRUE(d);
  expect_splice_equals_read_everywhere(*d, kCluster, 60);
  // The backing file's end inside an unallocated cluster.
  expect_splice_equals_read(*d, kBackingSize - 10, 20);
  expect_splice_equals_read(*d, kBackingSize - 70000, 140000);
  d->close();
}

// The whole image spliced in pipe-sized pieces equals what qemu-img
// converts it to.
TEST_F(Qcow2SpliceTest, WholeImageEqualsQemuImgConvert) {
  std::string img = make_image(true);
  std::string raw = dir_.file("converted.raw");
  ASSERT_EQ(std::system(("qemu-img convert -O raw " + img + " " + raw).c_str()), 0);
  std::ifstream f(raw, std::ios::binary);
  std::vector<uint8_t> want((std::istreambuf_iterator<char>(f)), {});
  ASSERT_EQ(want.size(), kImageSize);
  auto d = open(img);
  ASSERT_TRUE(d);
  const uint64_t piece = testing::kMaxSpliceRange - 3 * 4096;
  for (uint64_t off = 0; off < kImageSize; off += piece) {
    uint64_t len = std::min(piece, kImageSize - off);
    auto got = splice_range(*d, off, len);
    ASSERT_TRUE(got.result) << got.result.error().message;
    EXPECT_TRUE(std::equal(got.data.begin(), got.data.end(), want.begin() + off)) << off;
  }
  d->close();
}

TEST_F(Qcow2SpliceTest, RangesWithoutABackingFileMatchPreadv) {
  auto d = open(make_image(false));
  ASSERT_TRUE(d);
  expect_splice_equals_read_everywhere(*d, kCluster, 60);
  d->close();
}

TEST_F(Qcow2SpliceTest, StatsCountOneReadOnTheImageNode) {
  auto d = open(make_image(true));
  ASSERT_TRUE(d);
  const BlockStats& stats = d->edge()->node()->stats();
  uint64_t ops = stats.rd_operations;
  ASSERT_TRUE(splice_range(*d, 100000, 900000).result);
  EXPECT_EQ(stats.rd_operations, ops + 1);
  auto past = splice_range(*d, kImageSize - 1, 2);
  ASSERT_FALSE(past.result);
  EXPECT_EQ(past.result.error().code, EINVAL);
  EXPECT_EQ(past.buffered, 0u);
  d->close();
}

// Ranges as long as the pipe: those whose pages fit are spliced across all
// kinds of runs; one that spans a page more than the pipe holds is refused
// before anything is appended (the caller reads it normally).
TEST_F(Qcow2SpliceTest, RangesNearThePipeCapacity) {
  auto d = open(make_image(true));
  ASSERT_TRUE(d);
  auto pipe = Pipe::create(testing::kMaxSpliceRange);
  ASSERT_TRUE(pipe);
  uint64_t cap = (*pipe)->capacity();
  for (uint64_t off : {uint64_t{0}, uint64_t{4096}, uint64_t{900 * 1024}, uint64_t{2 << 20}}) {
    expect_splice_equals_read(*d, off, cap - 4096);
    expect_splice_equals_read(*d, off + 100, cap - 8192);
  }
  auto r = engine_.run(d->edge()->co_splice_read(100, cap, **pipe));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ENOTSUP);
  EXPECT_EQ((*pipe)->buffered(), 0u);
  d->close();
}

// Clusters smaller than a page would take a pipe slot each: refused whole.
TEST_F(Qcow2SpliceTest, SubPageClustersFallBackWhole) {
  std::string img = dir_.file("small.qcow2");
  std::string cmd = "qemu-img create -q -f qcow2 -o cluster_size=512 " + img +
                    " 1M && qemu-io -f qcow2 -c 'write -P 0x11 0 64k' " + img + " >/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  auto d = open(img);
  ASSERT_TRUE(d);
  auto r = splice_range(*d, 0, 65536);
  ASSERT_FALSE(r.result);
  EXPECT_EQ(r.result.error().code, ENOTSUP);
  EXPECT_EQ(r.buffered, 0u);
  d->close();
}

// With cache.direct the file cannot splice: a read that starts with data
// falls back whole (nothing appended); one that starts with zeroes keeps
// them and copies the data runs in.
TEST_F(Qcow2SpliceTest, DirectFileFallsBackWholeOrPerRun) {
  std::string img = make_image(false);
  auto r = engine_.run(Drive::co_open(
      engine_, {{"driver", "qcow2"},
                {"file", {{"driver", "file"}, {"filename", img}, {"cache", {{"direct", true}}}}}}));
  if (!r && r.error().code == EINVAL) GTEST_SKIP() << "file system without O_DIRECT";
  ASSERT_TRUE(r) << r.error().message;
  auto& d = *r;
  auto whole = splice_range(*d, 0, 200000);
  ASSERT_FALSE(whole.result);
  EXPECT_EQ(whole.result.error().code, ENOTSUP);
  EXPECT_EQ(whole.buffered, 0u);
  expect_splice_equals_read(*d, 256 * 1024 + 5, 300000);         // zeroes, holes, data
  expect_splice_equals_read(*d, 3 * 1024 * 1024 - 100, 200000);  // holes, compressed, data
  d->close();
}

}  // namespace
}  // namespace strata
