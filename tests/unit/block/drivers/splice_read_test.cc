// Splice reads of file, raw and filter nodes deliver what co_preadv reads.
#include <gtest/gtest.h>

#include <filesystem>
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

std::vector<uint8_t> random_bytes(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

void write_file(const std::string& path, const std::vector<uint8_t>& data) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
}

json file_opts(const std::string& path) {
  return {{"driver", "file"}, {"filename", path}};
}

// Runs each test on a disk-backed temporary directory (splices on the
// thread pool) and on /dev/shm (tmpfs: splices inline on the loop thread).
class SpliceReadTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    if (GetParam()) {
      if (!std::filesystem::is_directory("/dev/shm")) GTEST_SKIP() << "no /dev/shm";
      shm_dir_ = std::make_unique<ShmDir>();
    }
    data_ = random_bytes(3 * 1024 * 1024 + 1234, 11);
    path_ = file("disk.img");
    write_file(path_, data_);
  }
  std::string file(const std::string& name) const {
    return shm_dir_ ? shm_dir_->path + "/" + name : dir_.file(name);
  }
  std::unique_ptr<Drive> open(json options) {
    auto r = engine_.run(Drive::co_open(engine_, std::move(options)));
    EXPECT_TRUE(r) << r.error().message;
    return r ? std::move(*r) : nullptr;
  }

  struct ShmDir {
    ShmDir() {
      char tmpl[] = "/dev/shm/strata-splice-XXXXXX";
      path = mkdtemp(tmpl);
    }
    ~ShmDir() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
    std::string path;
  };

  testing::TempDir dir_;
  std::unique_ptr<ShmDir> shm_dir_;
  Engine engine_;
  std::string path_;
  std::vector<uint8_t> data_;
};

TEST_P(SpliceReadTest, FileRangesMatchPreadv) {
  auto d = open(file_opts(path_));
  ASSERT_TRUE(d);
  expect_splice_equals_read_everywhere(*d, 64 * 1024, 40);
  // A page-aligned range fills the whole pipe.
  auto whole = splice_range(*d, 4096, 1024 * 1024);
  ASSERT_TRUE(whole.result) << whole.result.error().message;
  EXPECT_TRUE(std::equal(whole.data.begin(), whole.data.end(), data_.begin() + 4096));
  d->close();
}

// An unaligned range of the pipe's capacity spans one page more than the
// pipe has slots for: the read is refused before anything is appended.
TEST_P(SpliceReadTest, RangeWhosePagesOverflowThePipeIsRefusedWhole) {
  auto d = open(file_opts(path_));
  ASSERT_TRUE(d);
  auto pipe = Pipe::create(testing::kMaxSpliceRange);
  ASSERT_TRUE(pipe);
  uint64_t len = (*pipe)->capacity();
  auto r = engine_.run(d->edge()->co_splice_read(1000, len, **pipe));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ENOTSUP);
  EXPECT_EQ((*pipe)->buffered(), 0u);
  ASSERT_TRUE(engine_.run(d->edge()->co_splice_read(1000, len - 4096, **pipe)));
  EXPECT_EQ((*pipe)->buffered(), len - 4096);
  d->close();
}

TEST_P(SpliceReadTest, RawWithOffsetAndSizeReadsItsWindow) {
  const uint64_t offset = 12345, size = 2 * 1024 * 1024 + 99;
  auto d =
      open({{"driver", "raw"}, {"offset", offset}, {"size", size}, {"file", file_opts(path_)}});
  ASSERT_TRUE(d);
  ASSERT_EQ(d->size(), size);
  expect_splice_equals_read_everywhere(*d, 64 * 1024, 30);
  auto tail = splice_range(*d, size - 70000, 70000);
  ASSERT_TRUE(tail.result) << tail.result.error().message;
  EXPECT_TRUE(
      std::equal(tail.data.begin(), tail.data.end(), data_.begin() + offset + size - 70000));
  auto past = splice_range(*d, size - 10, 11);
  ASSERT_FALSE(past.result);
  EXPECT_EQ(past.result.error().code, EINVAL);
  EXPECT_EQ(past.buffered, 0u);
  d->close();
}

TEST_P(SpliceReadTest, FilterForwardsToItsFile) {
  auto d = open({{"driver", "fault"}, {"rules", json::array()}, {"file", file_opts(path_)}});
  ASSERT_TRUE(d);
  expect_splice_equals_read_everywhere(*d, 256 * 1024, 20);
  d->close();
}

// A regular file's size counts whole 512-byte sectors, as QEMU's block
// layer counts it (the tail past the file's end reads as zeroes).
uint64_t sector_end(uint64_t bytes) {
  return (bytes + 511) / 512 * 512;
}

TEST_P(SpliceReadTest, ReadPastTheEndOfARootChildFailsWithEinval) {
  auto d = open(file_opts(path_));
  ASSERT_TRUE(d);
  uint64_t end = sector_end(data_.size());
  for (auto [off, len] :
       {std::pair<uint64_t, uint64_t>{end - 100, 101}, {end, 1}, {end + 4096, 4096}}) {
    auto r = splice_range(*d, off, len);
    ASSERT_FALSE(r.result);
    EXPECT_EQ(r.result.error().code, EINVAL);
    EXPECT_EQ(r.buffered, 0u);
  }
  d->close();
}

TEST_P(SpliceReadTest, StatsCountOneReadPerSplice) {
  auto d = open(file_opts(path_));
  ASSERT_TRUE(d);
  const BlockStats& stats = d->edge()->node()->stats();
  uint64_t ops = stats.rd_operations, bytes = stats.rd_bytes;
  ASSERT_TRUE(splice_range(*d, 100, 300000).result);
  EXPECT_EQ(stats.rd_operations, ops + 1);
  EXPECT_EQ(stats.rd_bytes, bytes + 300000);
  uint64_t invalid = stats.invalid_rd_operations;
  ASSERT_FALSE(splice_range(*d, sector_end(data_.size()), 1).result);
  EXPECT_EQ(stats.invalid_rd_operations, invalid + 1);
  EXPECT_EQ(stats.rd_operations, ops + 1);
  d->close();
}

INSTANTIATE_TEST_SUITE_P(DiskAndTmpfs, SpliceReadTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "tmpfs" : "disk"; });

class SpliceReadFallbackTest : public ::testing::Test {
 protected:
  testing::TempDir dir_;
  Engine engine_;
};

TEST_F(SpliceReadFallbackTest, DirectIoAnswersEnotsupWithNothingAppended) {
  std::string path = dir_.file("direct.img");
  write_file(path, random_bytes(1 << 20, 3));
  auto r = engine_.run(Drive::co_open(
      engine_, {{"driver", "file"}, {"filename", path}, {"cache", {{"direct", true}}}}));
  if (!r && r.error().code == EINVAL) GTEST_SKIP() << "file system without O_DIRECT";
  ASSERT_TRUE(r) << r.error().message;
  auto& d = *r;
  const BlockStats& stats = d->edge()->node()->stats();
  uint64_t ops = stats.rd_operations, failed = stats.failed_rd_operations;
  for (auto [off, len] : {std::pair<uint64_t, uint64_t>{0, 65536}, {4096, 8192}, {100, 5000}}) {
    auto out = splice_range(*d, off, len);
    ASSERT_FALSE(out.result);
    EXPECT_EQ(out.result.error().code, ENOTSUP);
    EXPECT_EQ(out.buffered, 0u);
  }
  // Refusals are not reads: the caller's co_preadv counts the read.
  EXPECT_EQ(stats.rd_operations, ops);
  EXPECT_EQ(stats.failed_rd_operations, failed);
  d->close();
}

TEST_F(SpliceReadFallbackTest, FaultRulesSendMatchingReadsToPreadvOnce) {
  std::string path = dir_.file("fault.img");
  write_file(path, random_bytes(1 << 20, 4));
  auto r = engine_.run(Drive::co_open(
      engine_,
      {{"driver", "fault"},
       {"rules",
        {{{"event", "read"}, {"errno", "EIO"}, {"offset", 65536}, {"length", 4096}, {"count", 1}}}},
       {"file", {{"driver", "file"}, {"filename", path}}}}));
  ASSERT_TRUE(r) << r.error().message;
  auto& d = *r;
  auto refused = splice_range(*d, 60000, 10000);
  ASSERT_FALSE(refused.result);
  EXPECT_EQ(refused.result.error().code, ENOTSUP);
  EXPECT_EQ(refused.buffered, 0u);
  // The refusal did not use up the rule: the fallback read meets it.
  std::vector<uint8_t> buf(10000);
  auto failed = d->read(60000, buf);
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.error().code, EIO);
  EXPECT_TRUE(d->read(60000, buf));
  // Ranges no rule matches are spliced.
  expect_splice_equals_read(*d, 0, 65536);
  expect_splice_equals_read(*d, 69632, 300000);
  d->close();
}

}  // namespace
}  // namespace strata
