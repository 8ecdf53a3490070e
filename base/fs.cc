#include "base/fs.h"

#include "base/io_ring.h"
#include "base/pipe.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/magic.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cstring>

namespace strata::fs {

Error errno_error(int err, const std::string& what) {
  return Error{err, what + ": " + std::strerror(err)};
}

namespace {
// The outcome of a syscall on the pool: a non-negative value or -errno.
using SysResult = int64_t;

Result<size_t> to_size(SysResult r, const char* what) {
  if (r < 0) return errno_error(static_cast<int>(-r), what);
  return static_cast<size_t>(r);
}
Result<void> to_void(SysResult r, const char* what) {
  if (r < 0) return errno_error(static_cast<int>(-r), what);
  return {};
}

SysResult retry_eintr(auto&& fn) {
  for (;;) {
    int64_t r = fn();
    if (r >= 0) return r;
    if (errno != EINTR) return -errno;
  }
}

// Advances an iovec array past `done` bytes.
void advance(std::vector<struct iovec>& iov, size_t& first, size_t done) {
  while (done > 0 && first < iov.size()) {
    if (done >= iov[first].iov_len) {
      done -= iov[first].iov_len;
      first++;
    } else {
      iov[first].iov_base = static_cast<uint8_t*>(iov[first].iov_base) + done;
      iov[first].iov_len -= done;
      done = 0;
    }
  }
}

// Moves all of `iov` with `call(iovecs, count, offset)` (preadv or pwritev),
// retrying short transfers. The common case, one call moving everything,
// uses the caller's iovec array as is; only a short transfer copies it.
// `at_zero` handles a call that moved nothing (end of file for reads).
template <typename Call, typename AtZero>
SysResult blocking_transfer(const IoVec& iov, uint64_t offset, Call call, AtZero at_zero) {
  const auto& entries = iov.entries();
  size_t total = 0;
  if (entries.size() <= IOV_MAX) {
    SysResult r =
        retry_eintr([&] { return call(entries.data(), static_cast<int>(entries.size()), offset); });
    if (r < 0 || static_cast<size_t>(r) == iov.size()) return r;
    if (r == 0) return at_zero(total);
    total = static_cast<size_t>(r);
  }
  std::vector<struct iovec> rest(entries.begin(), entries.end());
  size_t first = 0;
  advance(rest, first, total);
  while (first < rest.size()) {
    int count = static_cast<int>(std::min<size_t>(rest.size() - first, IOV_MAX));
    SysResult r = retry_eintr([&] { return call(&rest[first], count, offset + total); });
    if (r < 0) return r;
    if (r == 0) return at_zero(total);
    total += static_cast<size_t>(r);
    advance(rest, first, static_cast<size_t>(r));
  }
  return static_cast<SysResult>(total);
}

SysResult blocking_preadv(int fd, const IoVec& iov, uint64_t offset) {
  return blocking_transfer(
      iov, offset,
      [fd](const struct iovec* v, int n, uint64_t off) {
        return ::preadv(fd, v, n, static_cast<off_t>(off));
      },
      [&iov](size_t done) {
        iov.fill(done, iov.size() - done, 0);  // end of file reads as zeroes
        return static_cast<SysResult>(done);
      });
}

SysResult blocking_pwritev(int fd, const IoVec& iov, uint64_t offset) {
  return blocking_transfer(
      iov, offset,
      [fd](const struct iovec* v, int n, uint64_t off) {
        return ::pwritev(fd, v, n, static_cast<off_t>(off));
      },
      [](size_t) { return static_cast<SysResult>(-EIO); });
}

// Moves all of `iov` through the ring, resubmitting the rest of a short
// transfer; a read that meets the end of the file fills the rest with
// zeroes. What the ring refuses (-EAGAIN) goes to the pool.
template <bool kWrite>
Task<SysResult> ring_transfer(Loop& loop, IoRing& ring, int fd, const IoVec& iov, uint64_t offset) {
  const auto& entries = iov.entries();
  std::vector<struct iovec> rest;  // the iovecs left after a short transfer
  size_t first = 0;
  size_t total = 0;
  while (total < iov.size()) {
    const struct iovec* v = rest.empty() ? entries.data() : &rest[first];
    auto count = static_cast<uint32_t>(rest.empty() ? entries.size() : rest.size() - first);
    constexpr auto kOp = kWrite ? RingRequest::Op::kWritev : RingRequest::Op::kReadv;
    int64_t r = co_await ring.transfer(kOp, fd, v, count, offset + total);
    if (r == -EINTR) continue;
    if (r == -EAGAIN) {
      IoVec left = iov.slice(total, iov.size() - total);
      SysResult p = co_await loop.offload([&] {
        return kWrite ? blocking_pwritev(fd, left, offset + total)
                      : blocking_preadv(fd, left, offset + total);
      });
      co_return p < 0 ? p : static_cast<SysResult>(total) + p;
    }
    if (r < 0) co_return r;
    if (r == 0 && kWrite) co_return -EIO;
    if (r == 0) {
      iov.fill(total, iov.size() - total, 0);  // end of file reads as zeroes
      co_return static_cast<SysResult>(total);
    }
    if (rest.empty()) {
      rest.assign(entries.begin(), entries.end());
      advance(rest, first, total);
    }
    advance(rest, first, static_cast<size_t>(r));
    total += static_cast<size_t>(r);
  }
  co_return static_cast<SysResult>(total);
}

// The part of a transfer that does not run inline: on the policy's ring,
// or on the pool.
template <bool kWrite>
Task<SysResult> background_transfer(Loop& loop, InlineIo* policy, int fd, const IoVec& iov,
                                    uint64_t offset) {
  if (policy && policy->ring && iov.entries().size() <= IOV_MAX) {
    co_return co_await ring_transfer<kWrite>(loop, *policy->ring, fd, iov, offset);
  }
  co_return co_await loop.offload([&] {
    return kWrite ? blocking_pwritev(fd, iov, offset) : blocking_preadv(fd, iov, offset);
  });
}

// One fdatasync or fallocate through the ring, retried on EINTR; -EAGAIN
// from the ring means "run it on the pool" and is returned as is.
Task<SysResult> ring_call(IoRing& ring, RingRequest::Op op, int fd, int mode, uint64_t offset,
                          uint64_t len) {
  for (;;) {
    RingAwaiter call = op == RingRequest::Op::kFdatasync ? ring.fdatasync(fd)
                                                         : ring.fallocate(fd, mode, offset, len);
    int64_t r = co_await call;
    if (r != -EINTR) co_return r;
  }
}

}  // namespace

Task<Result<int>> co_open(Loop& loop, std::string path, int flags, int mode) {
  SysResult r = co_await loop.offload(
      [&] { return retry_eintr([&] { return ::open(path.c_str(), flags | O_CLOEXEC, mode); }); });
  if (r < 0) co_return errno_error(static_cast<int>(-r), "Could not open '" + path + "'");
  co_return static_cast<int>(r);
}

Task<Result<void>> co_close(Loop& loop, int fd) {
  SysResult r = co_await loop.offload([fd] { return static_cast<SysResult>(::close(fd)); });
  co_return to_void(r < 0 ? -errno : 0, "close");
}

InlineIo InlineIo::probe(int fd, bool direct) {
  InlineIo io;
  struct statfs st {};
  if (::fstatfs(fd, &st) != 0) return io;
  io.memory_backed = st.f_type == TMPFS_MAGIC || st.f_type == RAMFS_MAGIC;
  io.try_nowait_reads = !io.memory_backed && !direct;
  return io;
}

namespace {

bool fits_inline(const IoVec& iov, size_t limit = InlineIo::kMaxInlineBytes) {
  return iov.size() <= limit && iov.entries().size() <= IOV_MAX;
}

// One preadv2(RWF_NOWAIT) of the whole request: the bytes the page cache
// gave without blocking, 0 at end of file, or -errno (-EAGAIN: not cached).
SysResult nowait_preadv(int fd, const IoVec& iov, uint64_t offset) {
  const auto& v = iov.entries();
  return retry_eintr([&] {
    return ::preadv2(fd, v.data(), static_cast<int>(v.size()), static_cast<off_t>(offset),
                     RWF_NOWAIT);
  });
}

// Tries the read on the loop thread. Returns the bytes done (maybe fewer than
// asked: the rest is for the pool), or -errno for an error of an inline read
// of a memory-backed file.
SysResult inline_preadv(InlineIo& policy, int fd, const IoVec& iov, uint64_t offset) {
  if (policy.memory_backed) {
    if (!fits_inline(iov, InlineIo::kMaxInlineMemoryReadBytes)) return 0;
    return blocking_preadv(fd, iov, offset);
  }
  if (!policy.try_nowait_reads || !fits_inline(iov)) return 0;
  SysResult r = nowait_preadv(fd, iov, offset);
  if (r == -EOPNOTSUPP || r == -EINVAL) policy.try_nowait_reads = false;
  // Nothing cached, an error or the end of the file: the pool does it all
  // and reports errors as usual.
  return std::max<SysResult>(r, 0);
}

}  // namespace

Task<Result<size_t>> co_preadv(Loop& loop, int fd, const IoVec& iov, uint64_t offset,
                               InlineIo* policy) {
  SysResult done = policy ? inline_preadv(*policy, fd, iov, offset) : 0;
  if (done < 0 || static_cast<size_t>(done) == iov.size()) co_return to_size(done, "preadv");
  IoVec rest = iov.slice(static_cast<size_t>(done), iov.size() - static_cast<size_t>(done));
  SysResult r = co_await background_transfer<false>(loop, policy, fd, rest, offset + done);
  co_return to_size(r < 0 ? r : r + done, "preadv");
}

Task<Result<size_t>> co_pwritev(Loop& loop, int fd, const IoVec& iov, uint64_t offset,
                                InlineIo* policy) {
  if (policy && policy->memory_backed && fits_inline(iov, loop.max_inline_write())) {
    co_return to_size(blocking_pwritev(fd, iov, offset), "pwritev");
  }
  SysResult r = co_await background_transfer<true>(loop, policy, fd, iov, offset);
  co_return to_size(r, "pwritev");
}

uint64_t page_size() {
  static const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  return page;
}

bool pipe_fits_pages(const Pipe& pipe, uint64_t offset, uint64_t len, uint64_t extra_slots) {
  uint64_t page = page_size();
  uint64_t spanned = (offset + len + page - 1) / page - offset / page;
  uint64_t used = (pipe.buffered() + page - 1) / page;
  return used + spanned + extra_slots <= pipe.capacity() / page;
}

Task<Result<void>> co_splice_to_pipe(Loop& loop, int fd, uint64_t offset, size_t len, Pipe& pipe,
                                     InlineIo* policy) {
  if (!pipe_fits_pages(pipe, offset, len)) {
    co_return Error{ENOTSUP, "the pipe has no room for the pages of the range"};
  }
  size_t before = pipe.buffered();
  Result<void> r;
  if (policy && policy->memory_backed && len <= InlineIo::kMaxInlineMemoryReadBytes) {
    r = pipe.fill_from_file(fd, offset, len);
  } else {
    r = co_await loop.offload([&] { return pipe.fill_from_file(fd, offset, len); });
  }
  if (!r && r.error().code == EINVAL && pipe.buffered() == before) {
    co_return Error{ENOTSUP, "file cannot be spliced: " + r.error().message};
  }
  co_return r;
}

Task<Result<void>> co_fdatasync(Loop& loop, int fd, InlineIo* policy) {
  SysResult r = -EAGAIN;
  if (policy && policy->ring) {
    r = co_await ring_call(*policy->ring, RingRequest::Op::kFdatasync, fd, 0, 0, 0);
  }
  if (r == -EAGAIN) {
    r = co_await loop.offload([fd] { return retry_eintr([fd] { return ::fdatasync(fd); }); });
  }
  co_return to_void(r, "fdatasync");
}

namespace {
Task<Result<void>> co_fallocate(Loop& loop, int fd, int mode, uint64_t offset, uint64_t len,
                                InlineIo* policy, const char* what) {
  SysResult r = -EAGAIN;
  if (policy && policy->ring) {
    r = co_await ring_call(*policy->ring, RingRequest::Op::kFallocate, fd, mode, offset, len);
  }
  if (r == -EAGAIN) {
    r = co_await loop.offload([=] {
      return retry_eintr([=] {
        return ::fallocate(fd, mode, static_cast<off_t>(offset), static_cast<off_t>(len));
      });
    });
  }
  co_return to_void(r, what);
}
}  // namespace

Task<Result<void>> co_punch_hole(Loop& loop, int fd, uint64_t offset, uint64_t len,
                                 InlineIo* policy) {
  return co_fallocate(loop, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, len, policy,
                      "fallocate(PUNCH_HOLE)");
}

Task<Result<void>> co_zero_range(Loop& loop, int fd, uint64_t offset, uint64_t len, bool extend,
                                 InlineIo* policy) {
  int mode = FALLOC_FL_ZERO_RANGE | (extend ? 0 : FALLOC_FL_KEEP_SIZE);
  return co_fallocate(loop, fd, mode, offset, len, policy, "fallocate(ZERO_RANGE)");
}

Task<Result<void>> co_allocate(Loop& loop, int fd, uint64_t offset, uint64_t len,
                               InlineIo* policy) {
  return co_fallocate(loop, fd, 0, offset, len, policy, "fallocate");
}

Task<Result<void>> co_ftruncate(Loop& loop, int fd, uint64_t size) {
  SysResult r = co_await loop.offload(
      [=] { return retry_eintr([=] { return ::ftruncate(fd, static_cast<off_t>(size)); }); });
  co_return to_void(r, "ftruncate");
}

Task<Result<struct stat>> co_fstat(Loop& loop, int fd) {
  struct stat st {};
  SysResult r =
      co_await loop.offload([&] { return retry_eintr([&] { return ::fstat(fd, &st); }); });
  if (r < 0) co_return errno_error(static_cast<int>(-r), "fstat");
  co_return st;
}

void raise_open_file_limit() {
  struct rlimit lim {};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur >= lim.rlim_max) return;
  lim.rlim_cur = lim.rlim_max;
  (void)setrlimit(RLIMIT_NOFILE, &lim);
}

Result<struct stat> fstat_now(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) < 0) return errno_error(errno, "fstat");
  return st;
}

}  // namespace strata::fs
