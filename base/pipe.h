// Pipe: a kernel pipe that carries file data to a socket without copying it
// through user space. A reader splices the file's pages into the pipe (for
// page-cache and tmpfs files the kernel takes references to the pages; no
// byte is copied), and the writer of a reply splices them on into the
// socket, where the peer's receive is the only copy.
//
// Contract: bytes come out in the order they went in. Both ends are
// non-blocking, so a fill beyond capacity() fails with EAGAIN instead of
// waiting: whoever fills a pipe sizes the request to capacity() first.
// A failed fill may leave part of its bytes in the pipe; clear() empties it.
// Note that a page spliced from a file is shared, not copied: a write to the
// file before the pipe is drained can still change what the peer receives.
// Thread rules: one user at a time; a pool thread may fill the pipe while
// its owner's coroutine waits for that.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "strata/iovec.h"
#include "strata/result.h"

namespace strata {

class Pipe {
 public:
  // A pipe that holds at least `capacity` bytes if the kernel allows it
  // (F_SETPIPE_SZ; unprivileged processes are capped by fs.pipe-max-size
  // and by the per-user pipe allowance), else the kernel's default.
  static Result<std::unique_ptr<Pipe>> create(size_t capacity);
  ~Pipe();
  Pipe(const Pipe&) = delete;
  Pipe& operator=(const Pipe&) = delete;

  size_t capacity() const { return capacity_; }
  // Bytes filled and not yet drained.
  size_t buffered() const { return buffered_; }

  // Appends `len` bytes of file `fd` from `offset` by splice; bytes past the
  // end of the file are appended as zeroes (as fs::co_preadv fills them).
  // May wait on the file's device: call it from a pool thread unless the
  // file is memory-backed.
  Result<void> fill_from_file(int fd, uint64_t offset, size_t len);
  // Appends a copy of `data`.
  Result<void> fill_from(const IoVec& data);
  Result<void> fill_zeroes(size_t len);

  // Moves up to `len` buffered bytes into the non-blocking socket `fd`;
  // returns how many moved, 0 when the socket has no room now.
  Result<size_t> drain_to(int fd, size_t len);
  // Copies `len` buffered bytes out into `dst` (a fallback for consumers
  // that cannot splice, such as TLS).
  Result<void> drain_into(void* dst, size_t len);
  // Throws away everything buffered.
  void clear();

 private:
  Pipe(int read_fd, int write_fd, size_t capacity)
      : read_fd_(read_fd), write_fd_(write_fd), capacity_(capacity) {}
  Result<void> fill_bytes(const void* data, size_t len);

  int read_fd_;
  int write_fd_;
  size_t capacity_;
  size_t buffered_ = 0;
};

}  // namespace strata
