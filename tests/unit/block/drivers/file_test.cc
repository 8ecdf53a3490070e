#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <fstream>
#include <random>

#include "block/core/graph.h"
#include "strata/drive.h"
#include "unit/block/drivers/temp_dir.h"

namespace strata {
namespace {

using nlohmann::json;

void make_file(const std::string& path, uint64_t size, uint8_t fill = 0) {
  std::ofstream f(path, std::ios::binary);
  std::vector<char> chunk(65536, static_cast<char>(fill));
  for (uint64_t done = 0; done < size; done += chunk.size()) {
    f.write(chunk.data(),
            static_cast<std::streamsize>(std::min<uint64_t>(chunk.size(), size - done)));
  }
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

json file_opts(const std::string& path, json extra = json::object()) {
  json o = {{"driver", "file"}, {"filename", path}};
  o.update(extra);
  return o;
}

class FileDriverTest : public ::testing::Test {
 protected:
  std::unique_ptr<Drive> open(json options, DriveOptions d = {}) {
    auto r = engine_.run(Drive::co_open(engine_, std::move(options), d));
    EXPECT_TRUE(r) << r.error().message;
    return r ? std::move(*r) : nullptr;
  }
  testing::TempDir dir_;
  Engine engine_;
};

TEST_F(FileDriverTest, ReadsAndWritesReachTheFile) {
  std::string path = dir_.file("disk.raw");
  make_file(path, 1 << 20, 0x5A);
  auto d = open(file_opts(path));
  ASSERT_TRUE(d);
  EXPECT_EQ(d->size(), 1u << 20);
  std::vector<uint8_t> buf(10000, 0xC3);
  ASSERT_TRUE(d->write(12345, buf));
  ASSERT_TRUE(d->flush());
  auto disk = read_file(path);
  EXPECT_TRUE(
      std::all_of(disk.begin() + 12345, disk.begin() + 22345, [](uint8_t b) { return b == 0xC3; }));
  EXPECT_EQ(disk[12344], 0x5A);
  EXPECT_EQ(disk[22345], 0x5A);
  std::vector<uint8_t> back(20000);
  ASSERT_TRUE(d->read(10000, back));
  EXPECT_EQ(back[2344], 0x5A);
  EXPECT_EQ(back[2345], 0xC3);
  d->close();
}

TEST_F(FileDriverTest, DirectIoAlignsUnalignedRequests) {
  std::string path = dir_.file("direct.raw");
  make_file(path, 1 << 20, 0x01);
  auto r =
      engine_.run(Drive::co_open(engine_, file_opts(path, {{"cache", {{"direct", true}}}}), {}));
  if (!r && r.error().code == EINVAL) GTEST_SKIP() << "file system without O_DIRECT";
  ASSERT_TRUE(r) << r.error().message;
  auto& d = *r;
  std::mt19937 rng(7);
  auto model = read_file(path);
  for (int i = 0; i < 50; i++) {
    uint64_t off = rng() % 900000, len = 1 + rng() % 60000;
    std::vector<uint8_t> buf(len, static_cast<uint8_t>(rng()));
    ASSERT_TRUE(d->write(off, buf));
    std::copy(buf.begin(), buf.end(), model.begin() + off);
  }
  std::vector<uint8_t> all(model.size());
  ASSERT_TRUE(d->read(0, all));
  EXPECT_EQ(all, model);
  d->close();
  EXPECT_EQ(read_file(path), model);
}

// Block status remembers the last data extent (SEEK_HOLE is costly); the
// node's own discards and write-zeroes must make it look again.
TEST_F(FileDriverTest, BlockStatusSeesHolesPunchedAfterADataQuery) {
  std::string path = dir_.file("remembered.raw");
  make_file(path, 4 << 20, 0x66);
  auto d = open(file_opts(path, {{"discard", "unmap"}}));
  ASSERT_TRUE(d);
  auto st = engine_.run(d->co_block_status(0, 4 << 20));
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->data);
  EXPECT_EQ(st->length, 4u << 20);
  st = engine_.run(d->co_block_status(3 << 20, 4 << 20));  // inside the known extent
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->data);
  EXPECT_EQ(st->length, 1u << 20);
  ASSERT_TRUE(d->discard(2 << 20, 1 << 20));
  st = engine_.run(d->co_block_status(2 << 20, 4 << 20));
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->zero);
  EXPECT_EQ(st->length, 1u << 20);
  st = engine_.run(d->co_block_status(0, 4 << 20));
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->data);
  EXPECT_EQ(st->length, 2u << 20);
  ASSERT_TRUE(d->write_zeroes(0, 1 << 20, /*may_unmap=*/true));
  st = engine_.run(d->co_block_status(0, 4 << 20));
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->zero);
  d->close();
}

TEST_F(FileDriverTest, WriteZeroesAndDiscardMakeHolesThatBlockStatusReports) {
  std::string path = dir_.file("sparse.raw");
  make_file(path, 4 << 20, 0x77);
  auto d = open(file_opts(path, {{"discard", "unmap"}}));
  ASSERT_TRUE(d);
  ASSERT_TRUE(d->write_zeroes(1 << 20, 1 << 20, /*may_unmap=*/true));
  ASSERT_TRUE(d->discard(3 << 20, 1 << 20));
  auto st = engine_.run(d->co_block_status(0, 4 << 20));
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->data);
  EXPECT_EQ(st->length, 1u << 20);
  st = engine_.run(d->co_block_status(1 << 20, 4 << 20));
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->zero);
  EXPECT_FALSE(st->data);
  EXPECT_EQ(st->length, 1u << 20);
  std::vector<uint8_t> back(1 << 20);
  ASSERT_TRUE(d->read(1 << 20, back));
  EXPECT_TRUE(std::all_of(back.begin(), back.end(), [](uint8_t b) { return b == 0; }));
  struct stat sb {};
  ASSERT_EQ(stat(path.c_str(), &sb), 0);
  EXPECT_LT(sb.st_blocks * 512, 3 << 20);  // the space really was released
  d->close();
}

TEST_F(FileDriverTest, WritesPastTheEndGrowTheProtocolNode) {
  std::string path = dir_.file("grow.raw");
  make_file(path, 4096);
  Node* n = *engine_.run(engine_.graph().co_add(file_opts(path, {{"node-name", "f"}})));
  std::vector<uint8_t> buf(4096, 9);
  IoVec iov(buf.data(), buf.size());
  // Internal requests (from a parent format driver) may write past the end.
  ASSERT_TRUE(engine_.run(n->co_pwritev(65536, iov, 0)));
  EXPECT_EQ(n->size(), 65536u + 4096);
  EXPECT_EQ(read_file(path).size(), 65536u + 4096);
  engine_.run(engine_.co_close_all());
}

TEST_F(FileDriverTest, ResizeChangesTheFileSize) {
  std::string path = dir_.file("resize.raw");
  make_file(path, 8192);
  auto d = open(file_opts(path));
  ASSERT_TRUE(engine_.run(d->co_resize(1 << 20)));
  EXPECT_EQ(d->size(), 1u << 20);
  d->close();
  EXPECT_EQ(read_file(path).size(), 1u << 20);
}

TEST_F(FileDriverTest, MissingFilesAndDirectoriesAreClearErrors) {
  auto r = engine_.run(Drive::co_open(engine_, file_opts(dir_.file("absent")), {}));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ENOENT);
  EXPECT_NE(r.error().message.find("Could not open"), std::string::npos);
  EXPECT_NE(r.error().message.find("No such file or directory"), std::string::npos);
  std::filesystem::create_directory(dir_.file("adir"));
  r = engine_.run(Drive::co_open(engine_, file_opts(dir_.file("adir")), {}));
  ASSERT_FALSE(r);
  EXPECT_TRUE(engine_.graph().nodes().empty());
}

TEST_F(FileDriverTest, AutoReadOnlyFallsBackWhenWritingIsNotAllowed) {
  // A file nobody may open for writing, not even root: a read-only sysfs
  // attribute, or a mode 0444 file when not running as root.
  std::string path = "/sys/kernel/mm/transparent_hugepage/hpage_pmd_size";
  if (geteuid() != 0) {
    path = dir_.file("ro.raw");
    make_file(path, 4096);
    chmod(path.c_str(), 0444);
  }
  int probe = ::open(path.c_str(), O_RDWR);
  if (probe >= 0) {
    ::close(probe);
    GTEST_SKIP() << "no unwritable file available";
  }
  auto plain = engine_.run(engine_.graph().co_add(file_opts(path, {{"node-name", "w"}})));
  ASSERT_FALSE(plain);
  EXPECT_EQ(plain.error().code, EACCES);
  auto n = engine_.run(engine_.graph().co_add(
      file_opts(path, {{"node-name", "f"}, {"auto-read-only", true}, {"locking", "off"}})));
  ASSERT_TRUE(n) << n.error().message;
  EXPECT_TRUE((*n)->read_only());
  engine_.run(engine_.co_close_all());
}

TEST_F(FileDriverTest, TwoEnginesInOneProcessRespectEachOthersLocks) {
  std::string path = dir_.file("locked.raw");
  make_file(path, 65536);
  auto d = open(file_opts(path));
  ASSERT_TRUE(d);
  Engine other;
  auto r = other.run(Drive::co_open(other, file_opts(path), {}));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("Failed to get \"write\" lock"), std::string::npos)
      << r.error().message;
  // locking=off skips the check (as QEMU's option).
  auto unlocked = other.run(Drive::co_open(other, file_opts(path, {{"locking", "off"}}), {}));
  EXPECT_TRUE(unlocked);
  (*unlocked)->close();
  d->close();
  auto again = other.run(Drive::co_open(other, file_opts(path), {}));
  ASSERT_TRUE(again) << again.error().message;
  (*again)->close();
}

TEST_F(FileDriverTest, RawWindowMapsOffsetAndSize) {
  std::string path = dir_.file("window.raw");
  make_file(path, 1 << 20, 0x10);
  auto d =
      open({{"driver", "raw"}, {"offset", 65536}, {"size", 131072}, {"file", file_opts(path)}});
  ASSERT_TRUE(d);
  EXPECT_EQ(d->size(), 131072u);
  std::vector<uint8_t> buf(4096, 0xEE);
  ASSERT_TRUE(d->write(0, buf));
  std::vector<uint8_t> big(4096);
  EXPECT_FALSE(d->write(131072 - 100, big));  // past the window
  d->close();
  auto disk = read_file(path);
  EXPECT_EQ(disk[65535], 0x10);
  EXPECT_EQ(disk[65536], 0xEE);
  auto bad = engine_.run(Drive::co_open(
      engine_, {{"driver", "raw"}, {"offset", 1 << 20}, {"size", 1}, {"file", file_opts(path)}},
      {}));
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("has to be smaller or equal"), std::string::npos);
}

TEST_F(FileDriverTest, NullCoReadsZeroesWhenAsked) {
  auto d = open({{"driver", "null-co"}, {"size", 1 << 20}, {"read-zeroes", true}});
  ASSERT_TRUE(d);
  std::vector<uint8_t> buf(4096, 0xFF);
  ASSERT_TRUE(d->write(0, buf));
  ASSERT_TRUE(d->read(0, buf));
  EXPECT_TRUE(std::all_of(buf.begin(), buf.end(), [](uint8_t b) { return b == 0; }));
  auto st = engine_.run(d->co_block_status(0, 1 << 20));
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->zero);
  d->close();
  auto plain = open({{"driver", "null-co"}, {"size", 4096}});
  std::vector<uint8_t> untouched(4096, 0xFF);
  ASSERT_TRUE(plain->read(0, untouched));
  EXPECT_EQ(untouched[0], 0xFF);  // read-zeroes=off leaves the buffer alone, as QEMU
  plain->close();
}

}  // namespace
}  // namespace strata
