// fs::co_preadv / co_pwritev with an InlineIo policy: transfers that run on
// the loop thread must give exactly what the pool path gives, at the end of
// the file too, on tmpfs (memory-backed) and on an ordinary file system.
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "base/fs.h"
#include "base/loop.h"

namespace strata {
namespace {

bool is_tmpfs(const std::string& dir) {
  struct statfs st {};
  return ::statfs(dir.c_str(), &st) == 0 && st.f_type == TMPFS_MAGIC;
}

// A scratch file of `size` patterned bytes in `dir`, removed at the end.
class ScratchFile {
 public:
  ScratchFile(const std::string& dir, size_t size) : path_(dir + "/strata-fs-XXXXXX") {
    fd_ = ::mkstemp(path_.data());
    for (size_t i = 0; i < size; i++) pattern_.push_back(static_cast<uint8_t>(i * 7 + 3));
    if (fd_ >= 0 && ::pwrite(fd_, pattern_.data(), size, 0) != static_cast<ssize_t>(size)) {
      ::close(std::exchange(fd_, -1));
    }
  }
  ~ScratchFile() {
    if (fd_ >= 0) ::close(fd_);
    ::unlink(path_.c_str());
  }
  int fd() const { return fd_; }
  const std::vector<uint8_t>& pattern() const { return pattern_; }

 private:
  std::string path_;
  int fd_ = -1;
  std::vector<uint8_t> pattern_;
};

// Reads [offset, offset+len) through co_preadv with `policy` and checks the
// bytes (the pattern, then zeroes past the end) and the count reported.
void expect_read(Loop& loop, const ScratchFile& file, fs::InlineIo* policy, uint64_t offset,
                 size_t len) {
  std::vector<uint8_t> buf(len, 0xee);
  auto r = loop.run(fs::co_preadv(loop, file.fd(), IoVec(buf.data(), len), offset, policy));
  ASSERT_TRUE(r) << r.error().message;
  size_t size = file.pattern().size();
  size_t in_file = offset >= size ? 0 : std::min<size_t>(len, size - offset);
  EXPECT_EQ(*r, in_file) << "offset " << offset << " len " << len;
  for (size_t i = 0; i < len; i++) {
    uint8_t want = i < in_file ? file.pattern()[offset + i] : 0;
    ASSERT_EQ(buf[i], want) << "offset " << offset << " byte " << i;
  }
}

void expect_reads_like_the_pool(const std::string& dir, bool policy_from_probe) {
  Loop loop;
  const size_t size = 3 * fs::InlineIo::kMaxInlineMemoryReadBytes + 1234;
  ScratchFile file(dir, size);
  ASSERT_GE(file.fd(), 0);
  // Bring the file into the page cache so RWF_NOWAIT reads can hit.
  std::vector<uint8_t> warm(size);
  ASSERT_EQ(::pread(file.fd(), warm.data(), size, 0), static_cast<ssize_t>(size));
  fs::InlineIo forced{.memory_backed = false, .try_nowait_reads = true};
  fs::InlineIo policy = policy_from_probe ? fs::InlineIo::probe(file.fd(), false) : forced;
  expect_read(loop, file, &policy, 0, 4096);
  expect_read(loop, file, &policy, 100, 5000);
  expect_read(loop, file, &policy, size - 1000, 4096);  // straddles the end
  expect_read(loop, file, &policy, size + 4096, 4096);  // wholly past the end
  // The largest inline reads, and one byte more (split or on the pool).
  expect_read(loop, file, &policy, 4096, fs::InlineIo::kMaxInlineBytes);
  expect_read(loop, file, &policy, 1, fs::InlineIo::kMaxInlineBytes + 1);
  expect_read(loop, file, &policy, 8192, fs::InlineIo::kMaxInlineMemoryReadBytes);
  expect_read(loop, file, &policy, 3, fs::InlineIo::kMaxInlineMemoryReadBytes + 1);
  expect_read(loop, file, &policy, 0, size);        // too big to run inline
  expect_read(loop, file, nullptr, size - 10, 64);  // no policy: the pool
}

std::string shm_dir() {
  return "/dev/shm";
}

TEST(FsInlineTest, ProbeTellsMemoryBackedFiles) {
  if (!is_tmpfs(shm_dir())) GTEST_SKIP() << "no tmpfs at /dev/shm";
  ScratchFile file(shm_dir(), 10);
  ASSERT_GE(file.fd(), 0);
  fs::InlineIo io = fs::InlineIo::probe(file.fd(), false);
  EXPECT_TRUE(io.memory_backed);
  EXPECT_FALSE(io.try_nowait_reads);
}

TEST(FsInlineTest, ProbeNeverTriesNowaitReadsWithODirect) {
  ScratchFile file(std::filesystem::temp_directory_path().string(), 10);
  ASSERT_GE(file.fd(), 0);
  EXPECT_FALSE(fs::InlineIo::probe(file.fd(), true).try_nowait_reads);
}

TEST(FsInlineTest, MemoryBackedReadsMatchThePool) {
  if (!is_tmpfs(shm_dir())) GTEST_SKIP() << "no tmpfs at /dev/shm";
  expect_reads_like_the_pool(shm_dir(), true);
}

TEST(FsInlineTest, DiskFileReadsMatchThePool) {
  expect_reads_like_the_pool(std::filesystem::temp_directory_path().string(), true);
}

// A file system without RWF_NOWAIT support (tmpfs on many kernels) must
// still read right when nowait reads are tried, falling back to the pool.
TEST(FsInlineTest, NowaitReadsFallBackWhereUnsupported) {
  if (!is_tmpfs(shm_dir())) GTEST_SKIP() << "no tmpfs at /dev/shm";
  expect_reads_like_the_pool(shm_dir(), false);
}

TEST(FsInlineTest, MemoryBackedWritesLandWhole) {
  if (!is_tmpfs(shm_dir())) GTEST_SKIP() << "no tmpfs at /dev/shm";
  Loop loop;
  ScratchFile file(shm_dir(), 0);
  ASSERT_GE(file.fd(), 0);
  fs::InlineIo policy = fs::InlineIo::probe(file.fd(), false);
  for (size_t len :
       {size_t{512}, fs::InlineIo::kMaxInlineBytes, 2 * fs::InlineIo::kMaxInlineBytes}) {
    std::vector<uint8_t> data(len);
    for (size_t i = 0; i < len; i++) data[i] = static_cast<uint8_t>(i ^ len);
    auto w = loop.run(fs::co_pwritev(loop, file.fd(), IoVec(data.data(), len), 777, &policy));
    ASSERT_TRUE(w) << w.error().message;
    EXPECT_EQ(*w, len);
    std::vector<uint8_t> back(len);
    ASSERT_EQ(::pread(file.fd(), back.data(), len, 777), static_cast<ssize_t>(len));
    EXPECT_EQ(back, data);
  }
}

// A loop that allows large inline writes (strata-img) writes them whole too.
TEST(FsInlineTest, LargeInlineWritesLandWhole) {
  if (!is_tmpfs(shm_dir())) GTEST_SKIP() << "no tmpfs at /dev/shm";
  Loop loop;
  loop.set_max_inline_write(4 << 20);
  ScratchFile file(shm_dir(), 0);
  ASSERT_GE(file.fd(), 0);
  fs::InlineIo policy = fs::InlineIo::probe(file.fd(), false);
  const size_t len = (2 << 20) + 4096;
  std::vector<uint8_t> data(len);
  for (size_t i = 0; i < len; i++) data[i] = static_cast<uint8_t>(i * 13 + 1);
  auto w = loop.run(fs::co_pwritev(loop, file.fd(), IoVec(data.data(), len), 512, &policy));
  ASSERT_TRUE(w) << w.error().message;
  EXPECT_EQ(*w, len);
  std::vector<uint8_t> back(len);
  ASSERT_EQ(::pread(file.fd(), back.data(), len, 512), static_cast<ssize_t>(len));
  EXPECT_EQ(back, data);
}

}  // namespace
}  // namespace strata
