#include "base/pipe.h"

#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <numeric>
#include <vector>

namespace strata {
namespace {

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; i++) v[i] = static_cast<uint8_t>(seed + i * 13 + (i >> 9));
  return v;
}

std::unique_ptr<Pipe> make_pipe(size_t capacity) {
  auto p = Pipe::create(capacity);
  EXPECT_TRUE(p) << p.error().message;
  return p ? std::move(*p) : nullptr;
}

// A temporary file holding `data`, removed with the object.
class TempFile {
 public:
  explicit TempFile(const std::vector<uint8_t>& data) {
    std::FILE* f = std::tmpfile();
    fd_ = dup(fileno(f));
    std::fclose(f);
    EXPECT_EQ(pwrite(fd_, data.data(), data.size(), 0), static_cast<ssize_t>(data.size()));
  }
  ~TempFile() { close(fd_); }
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
};

TEST(PipeTest, CapacityIsAtLeastTheKernelDefault) {
  auto small = make_pipe(1);
  ASSERT_TRUE(small);
  EXPECT_GE(small->capacity(), 4096u);
  auto big = make_pipe(512 * 1024);
  ASSERT_TRUE(big);
  EXPECT_GE(big->capacity(), 512u * 1024);
  EXPECT_EQ(big->buffered(), 0u);
}

TEST(PipeTest, FillsComeOutInOrder) {
  auto pipe = make_pipe(256 * 1024);
  ASSERT_TRUE(pipe);
  auto file_data = pattern(100000, 3);
  TempFile file(file_data);
  auto mem = pattern(5000, 77);
  IoVec iov;
  iov.append(mem.data(), 1000);
  iov.append(mem.data() + 1000, 4000);
  ASSERT_TRUE(pipe->fill_from(iov));
  ASSERT_TRUE(pipe->fill_zeroes(70000));
  ASSERT_TRUE(pipe->fill_from_file(file.fd(), 1234, 50000));
  // Past the end of the file: the missing bytes read as zeroes.
  ASSERT_TRUE(pipe->fill_from_file(file.fd(), 99000, 3000));
  EXPECT_EQ(pipe->buffered(), 5000u + 70000 + 50000 + 3000);

  std::vector<uint8_t> want = mem;
  want.resize(want.size() + 70000, 0);
  want.insert(want.end(), file_data.begin() + 1234, file_data.begin() + 51234);
  want.insert(want.end(), file_data.begin() + 99000, file_data.end());
  want.resize(want.size() + 2000, 0);
  std::vector<uint8_t> got(want.size());
  ASSERT_TRUE(pipe->drain_into(got.data(), 7));
  ASSERT_TRUE(pipe->drain_into(got.data() + 7, got.size() - 7));
  EXPECT_EQ(got, want);
  EXPECT_EQ(pipe->buffered(), 0u);
}

TEST(PipeTest, FillBeyondCapacityFailsWithEagain) {
  auto pipe = make_pipe(64 * 1024);
  ASSERT_TRUE(pipe);
  ASSERT_TRUE(pipe->fill_zeroes(pipe->capacity()));
  auto r = pipe->fill_zeroes(1);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EAGAIN);
  TempFile file(pattern(8192, 1));
  auto s = pipe->fill_from_file(file.fd(), 0, 4096);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, EAGAIN);
  EXPECT_EQ(pipe->buffered(), pipe->capacity());
}

TEST(PipeTest, ClearEmptiesThePipeForReuse) {
  auto pipe = make_pipe(64 * 1024);
  ASSERT_TRUE(pipe);
  ASSERT_TRUE(pipe->fill_zeroes(30000));
  pipe->clear();
  EXPECT_EQ(pipe->buffered(), 0u);
  auto data = pattern(100, 9);
  IoVec iov;
  iov.append(data.data(), data.size());
  ASSERT_TRUE(pipe->fill_from(iov));
  std::vector<uint8_t> got(100);
  ASSERT_TRUE(pipe->drain_into(got.data(), got.size()));
  EXPECT_EQ(got, data);  // nothing of the cleared zeroes is left
}

TEST(PipeTest, DrainIntoRefusesMoreThanBuffered) {
  auto pipe = make_pipe(64 * 1024);
  ASSERT_TRUE(pipe);
  ASSERT_TRUE(pipe->fill_zeroes(10));
  std::vector<uint8_t> got(11);
  auto r = pipe->drain_into(got.data(), got.size());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EINVAL);
  EXPECT_EQ(pipe->buffered(), 10u);
}

TEST(PipeTest, DrainToSocketMovesBytesInOrder) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
  auto pipe = make_pipe(64 * 1024);
  ASSERT_TRUE(pipe);
  TempFile file(pattern(20000, 5));
  ASSERT_TRUE(pipe->fill_from_file(file.fd(), 100, 20000));
  size_t moved = 0;
  std::vector<uint8_t> got;
  while (moved < 20000) {
    auto n = pipe->drain_to(sv[0], 20000 - moved);
    ASSERT_TRUE(n) << n.error().message;
    moved += *n;
    uint8_t buf[65536];
    ssize_t r;
    while ((r = read(sv[1], buf, sizeof buf)) > 0) got.insert(got.end(), buf, buf + r);
  }
  auto want = pattern(20000, 5);
  std::vector<uint8_t> expect(want.begin() + 100, want.end());
  expect.resize(20000, 0);
  EXPECT_EQ(got, expect);
  EXPECT_EQ(pipe->buffered(), 0u);
  close(sv[0]);
  close(sv[1]);
}

}  // namespace
}  // namespace strata
