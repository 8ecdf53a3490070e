#include "base/pipe.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace strata {

namespace {
// Zero fills are written from this constant block, one block per call.
constexpr size_t kZeroBlock = 64 * 1024;
constexpr uint8_t kZeros[kZeroBlock] = {};

Error pipe_error(int err, const char* what) {
  return Error{err, std::string(what) + ": " + std::strerror(err)};
}
}  // namespace

Result<std::unique_ptr<Pipe>> Pipe::create(size_t capacity) {
  int fds[2];
  if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) return pipe_error(errno, "pipe");
  // Refused above fs.pipe-max-size or the per-user allowance: keep the default.
  (void)fcntl(fds[1], F_SETPIPE_SZ, static_cast<int>(std::min<size_t>(capacity, 1u << 30)));
  int actual = fcntl(fds[1], F_GETPIPE_SZ);
  if (actual <= 0) {
    int err = errno;
    close(fds[0]);
    close(fds[1]);
    return pipe_error(err, "pipe size");
  }
  return std::unique_ptr<Pipe>(new Pipe(fds[0], fds[1], static_cast<size_t>(actual)));
}

Pipe::~Pipe() {
  close(read_fd_);
  close(write_fd_);
}

Result<void> Pipe::fill_from_file(int fd, uint64_t offset, size_t len) {
  auto off = static_cast<loff_t>(offset);
  while (len > 0) {
    ssize_t n = splice(fd, &off, write_fd_, nullptr, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return pipe_error(errno, "splice from file");
    if (n == 0) return fill_zeroes(len);  // end of file
    buffered_ += static_cast<size_t>(n);
    len -= static_cast<size_t>(n);
  }
  return {};
}

Result<void> Pipe::fill_bytes(const void* data, size_t len) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (len > 0) {
    ssize_t n = write(write_fd_, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return pipe_error(errno, "write to pipe");
    buffered_ += static_cast<size_t>(n);
    p += n;
    len -= static_cast<size_t>(n);
  }
  return {};
}

Result<void> Pipe::fill_from(const IoVec& data) {
  for (const auto& v : data.entries()) {
    if (auto r = fill_bytes(v.iov_base, v.iov_len); !r) return r;
  }
  return {};
}

Result<void> Pipe::fill_zeroes(size_t len) {
  while (len > 0) {
    size_t n = std::min(len, kZeroBlock);
    if (auto r = fill_bytes(kZeros, n); !r) return r;
    len -= n;
  }
  return {};
}

Result<size_t> Pipe::drain_to(int fd, size_t len) {
  len = std::min(len, buffered_);
  for (;;) {
    ssize_t n = splice(read_fd_, nullptr, fd, nullptr, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return size_t{0};
    if (n < 0) return pipe_error(errno, "splice to socket");
    buffered_ -= static_cast<size_t>(n);
    return static_cast<size_t>(n);
  }
}

Result<void> Pipe::drain_into(void* dst, size_t len) {
  if (len > buffered_) return Error{EINVAL, "pipe holds fewer bytes than asked for"};
  auto* p = static_cast<uint8_t*>(dst);
  while (len > 0) {
    ssize_t n = read(read_fd_, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return pipe_error(errno, "read from pipe");
    if (n == 0) return Error{EIO, "pipe closed"};
    buffered_ -= static_cast<size_t>(n);
    p += n;
    len -= static_cast<size_t>(n);
  }
  return {};
}

void Pipe::clear() {
  if (buffered_ == 0) return;
  uint8_t sink[16 * 1024];
  for (;;) {
    ssize_t n = read(read_fd_, sink, sizeof sink);
    if (n > 0) continue;
    if (n < 0 && errno == EINTR) continue;
    break;
  }
  buffered_ = 0;
}

}  // namespace strata
