#include "base/fs.h"

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
  SysResult r = co_await loop.offload([&] { return blocking_preadv(fd, rest, offset + done); });
  co_return to_size(r < 0 ? r : r + done, "preadv");
}

Task<Result<size_t>> co_pwritev(Loop& loop, int fd, const IoVec& iov, uint64_t offset,
                                InlineIo* policy) {
  if (policy && policy->memory_backed && fits_inline(iov, loop.max_inline_write())) {
    co_return to_size(blocking_pwritev(fd, iov, offset), "pwritev");
  }
  SysResult r = co_await loop.offload([&] { return blocking_pwritev(fd, iov, offset); });
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

Task<Result<void>> co_fdatasync(Loop& loop, int fd) {
  SysResult r =
      co_await loop.offload([fd] { return retry_eintr([fd] { return ::fdatasync(fd); }); });
  co_return to_void(r, "fdatasync");
}

namespace {
Task<Result<void>> co_fallocate(Loop& loop, int fd, int mode, uint64_t offset, uint64_t len,
                                const char* what) {
  SysResult r = co_await loop.offload([=] {
    return retry_eintr(
        [=] { return ::fallocate(fd, mode, static_cast<off_t>(offset), static_cast<off_t>(len)); });
  });
  co_return to_void(r, what);
}
}  // namespace

Task<Result<void>> co_punch_hole(Loop& loop, int fd, uint64_t offset, uint64_t len) {
  return co_fallocate(loop, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, len,
                      "fallocate(PUNCH_HOLE)");
}

Task<Result<void>> co_zero_range(Loop& loop, int fd, uint64_t offset, uint64_t len, bool extend) {
  int mode = FALLOC_FL_ZERO_RANGE | (extend ? 0 : FALLOC_FL_KEEP_SIZE);
  return co_fallocate(loop, fd, mode, offset, len, "fallocate(ZERO_RANGE)");
}

Task<Result<void>> co_allocate(Loop& loop, int fd, uint64_t offset, uint64_t len) {
  return co_fallocate(loop, fd, 0, offset, len, "fallocate");
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
