// IoRing and the fs:: calls that use it: data written and read through the
// ring is what the file holds, with O_DIRECT on a real disk; requests beyond
// the ring's depth wait and all complete (the ring-full path); a read across
// the end of the file is resubmitted and zero-filled; errors come back with
// errno; a loop destroyed with requests in the kernel waits for them; and
// with STRATA_IO_URING=0 the loop has no ring and says why (the fallback).
#include <fcntl.h>
#include <linux/falloc.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "base/fs.h"
#include "base/io_ring.h"
#include "base/loop.h"
#include "strata/iovec.h"

namespace strata {
namespace {

// A scratch file on the real disk (O_DIRECT needs one), removed at the end.
class DiskFile {
 public:
  explicit DiskFile(int extra_flags = 0) : path_("/var/tmp/strata-ring-XXXXXX") {
    int fd = ::mkstemp(path_.data());
    if (fd >= 0) ::close(fd);
    fd_ = ::open(path_.c_str(), O_RDWR | O_CLOEXEC | extra_flags);
  }
  ~DiskFile() {
    if (fd_ >= 0) ::close(fd_);
    ::unlink(path_.c_str());
  }
  int fd() const { return fd_; }

 private:
  std::string path_;
  int fd_ = -1;
};

void fill(AlignedBuffer& buf, uint8_t seed) {
  for (size_t i = 0; i < buf.size(); i++) buf.data()[i] = static_cast<uint8_t>(seed + i * 13);
}

// A ring of the test's own (not the loop's, which STRATA_IO_URING may turn
// off); declared after the loop, so it goes first.
std::unique_ptr<IoRing> make_ring(Loop& loop, unsigned depth = IoRing::kDefaultDepth) {
  auto ring = IoRing::create(loop, depth);
  if (!ring) {
    ADD_FAILURE() << ring.error().message;
    std::abort();  // these tests need io_uring; a kernel without it fails them
  }
  return std::move(*ring);
}

TEST(IoRing, WritesAndReadsWithODirect) {
  Loop loop;
  DiskFile file(O_DIRECT);
  ASSERT_GE(file.fd(), 0);
  fs::InlineIo policy = fs::InlineIo::probe(file.fd(), true);
  auto ring = make_ring(loop);
  policy.ring = ring.get();
  AlignedBuffer out(1 << 20, 4096), in(1 << 20, 4096);
  fill(out, 7);
  auto w = loop.run(fs::co_pwritev(loop, file.fd(), IoVec(out.data(), out.size()), 8192, &policy));
  ASSERT_TRUE(w) << w.error().message;
  EXPECT_EQ(*w, out.size());
  ASSERT_TRUE(loop.run(fs::co_fdatasync(loop, file.fd(), &policy)));
  auto r = loop.run(fs::co_preadv(loop, file.fd(), IoVec(in.data(), in.size()), 8192, &policy));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(0, std::memcmp(in.data(), out.data(), out.size()));
  EXPECT_GE(policy.ring->completed(), 3u);
  EXPECT_EQ(policy.ring->in_flight(), 0u);
}

// More requests than the ring is deep: the rest wait in order and every one
// completes with its own data.
TEST(IoRing, RequestsBeyondTheDepthWait) {
  Loop loop;
  auto made = make_ring(loop, 4);
  IoRing& ring = *made;
  DiskFile file(O_DIRECT);
  constexpr int kRequests = 64;
  constexpr size_t kBlock = 4096;
  AlignedBuffer data(kRequests * kBlock, 4096);
  fill(data, 1);
  ASSERT_EQ(::pwrite(file.fd(), data.data(), data.size(), 0), static_cast<ssize_t>(data.size()));
  fs::InlineIo policy;
  policy.ring = &ring;
  std::vector<AlignedBuffer> bufs;
  for (int i = 0; i < kRequests; i++) bufs.emplace_back(kBlock, 4096);
  int done = 0;
  size_t most_in_flight = 0, most_waiting = 0;
  auto one = [&](int i) -> Task<void> {
    auto r =
        co_await fs::co_preadv(loop, file.fd(), IoVec(bufs[i].data(), kBlock), i * kBlock, &policy);
    EXPECT_TRUE(r);
    most_in_flight = std::max(most_in_flight, ring.in_flight());
    EXPECT_EQ(0, std::memcmp(bufs[i].data(), data.data() + i * kBlock, kBlock)) << i;
    done++;
  };
  for (int i = 0; i < kRequests; i++) loop.spawn(one(i));
  most_waiting = ring.waiting();
  EXPECT_LE(ring.in_flight(), 4u);
  while (done < kRequests) loop.run(loop.co_sleep(1));
  EXPECT_EQ(most_waiting, kRequests - 4u);
  EXPECT_LE(most_in_flight, 4u);
  EXPECT_EQ(ring.waiting(), 0u);
  EXPECT_EQ(ring.completed(), static_cast<uint64_t>(kRequests));
  // One submission per loop iteration, not one per request.
  EXPECT_LT(ring.submit_calls(), static_cast<uint64_t>(kRequests));
}

// A vectored read across the end of the file: the ring returns what the
// file has, the rest is asked again (0: end of file) and reads as zeroes.
TEST(IoRing, ShortReadAtTheEndIsZeroFilled) {
  Loop loop;
  DiskFile file;
  std::vector<uint8_t> content(6000, 0x5a);
  ASSERT_EQ(::pwrite(file.fd(), content.data(), content.size(), 0), 6000);
  fs::InlineIo policy;
  auto ring = make_ring(loop);
  policy.ring = ring.get();
  std::vector<uint8_t> a(4096, 0xee), b(4096, 0xee);
  IoVec iov;
  iov.append(a.data(), a.size());
  iov.append(b.data(), b.size());
  auto r = loop.run(fs::co_preadv(loop, file.fd(), iov, 0, &policy));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*r, 6000u);
  EXPECT_EQ(a, std::vector<uint8_t>(4096, 0x5a));
  for (size_t i = 0; i < b.size(); i++) ASSERT_EQ(b[i], i < 1904 ? 0x5a : 0) << i;
}

TEST(IoRing, ErrorsCarryErrno) {
  Loop loop;
  fs::InlineIo policy;
  auto ring = make_ring(loop);
  policy.ring = ring.get();
  std::vector<uint8_t> buf(512);
  auto r = loop.run(fs::co_preadv(loop, 1 << 20, IoVec(buf.data(), buf.size()), 0, &policy));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EBADF);
  EXPECT_NE(r.error().message.find("preadv"), std::string::npos);
  // O_DIRECT with a buffer that is not aligned: EINVAL, no hang.
  DiskFile file(O_DIRECT);
  std::vector<uint8_t> unaligned(4096 + 1);
  auto u = loop.run(fs::co_pwritev(loop, file.fd(), IoVec(unaligned.data() + 1, 4096), 0, &policy));
  ASSERT_FALSE(u);
  EXPECT_EQ(u.error().code, EINVAL);
}

TEST(IoRing, FallocateThroughTheRing) {
  Loop loop;
  DiskFile file;
  fs::InlineIo policy;
  auto ring = make_ring(loop);
  policy.ring = ring.get();
  std::vector<uint8_t> data(1 << 20, 0x11);
  ASSERT_EQ(::pwrite(file.fd(), data.data(), data.size(), 0), static_cast<ssize_t>(data.size()));
  ASSERT_TRUE(loop.run(fs::co_punch_hole(loop, file.fd(), 0, 512 << 10, &policy)));
  EXPECT_EQ(::lseek(file.fd(), 0, SEEK_DATA), 512 << 10);
  ASSERT_TRUE(loop.run(fs::co_zero_range(loop, file.fd(), 1 << 20, 1 << 20, true, &policy)));
  EXPECT_EQ(::lseek(file.fd(), 0, SEEK_END), 2 << 20);
  std::vector<uint8_t> back(4096, 0xee);
  ASSERT_EQ(::pread(file.fd(), back.data(), back.size(), 4096), 4096);
  EXPECT_EQ(back, std::vector<uint8_t>(4096, 0));
}

// The loop goes away while requests are queued and in the kernel: the
// destructor waits for them, so nothing writes into freed buffers.
TEST(IoRing, LoopDestroyedWithRequestsInFlight) {
  DiskFile file(O_DIRECT);
  AlignedBuffer data(4 << 20, 4096);
  fill(data, 3);
  ASSERT_EQ(::pwrite(file.fd(), data.data(), data.size(), 0), static_cast<ssize_t>(data.size()));
  std::vector<AlignedBuffer> bufs;
  for (int i = 0; i < 16; i++) bufs.emplace_back(256 << 10, 4096);
  {
    Loop loop;
    fs::InlineIo policy;
    auto ring = make_ring(loop);
    policy.ring = ring.get();
    auto read = [&](int i) -> Task<void> {
      (void)co_await fs::co_preadv(loop, file.fd(), IoVec(bufs[i].data(), 256 << 10),
                                   i * (256 << 10), &policy);
    };
    for (int i = 0; i < 16; i++) loop.spawn(read(i));
    EXPECT_EQ(policy.ring->in_flight(), 16u);
  }
  SUCCEED();
}

TEST(IoRing, TurnedOffByTheEnvironment) {
  const char* was = std::getenv("STRATA_IO_URING");
  std::string saved = was ? was : "";
  ::setenv("STRATA_IO_URING", "0", 1);
  {
    Loop loop;
    EXPECT_EQ(loop.io_ring(), nullptr);
    EXPECT_NE(loop.io_ring_error().find("STRATA_IO_URING=0"), std::string::npos);
  }
  ::unsetenv("STRATA_IO_URING");
  {
    Loop loop;
    EXPECT_NE(loop.io_ring(), nullptr) << loop.io_ring_error();
  }
  if (was) ::setenv("STRATA_IO_URING", saved.c_str(), 1);
}

}  // namespace
}  // namespace strata
