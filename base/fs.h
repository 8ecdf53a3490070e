// Awaitable file operations. Each runs its syscall on the loop's thread pool
// so the loop thread never blocks; the result is a byte count or an Error
// carrying errno and a message naming the operation.
//
// A file whose policy names an io_uring (InlineIo::ring) sends reads,
// writes, fdatasync and fallocate through the ring instead of the pool:
// one syscall per loop iteration for every request the iteration queued,
// no thread hand-offs. Short transfers are resubmitted for the rest; a
// request the ring refuses (-EAGAIN) runs on the pool.
//
// Reads and writes may skip the pool when an InlineIo policy says the call
// cannot wait on a device: small transfers on memory-backed files (tmpfs,
// ramfs), and reads the page cache serves whole (preadv2 with RWF_NOWAIT,
// where the file system supports it). A pool round trip costs tens of
// microseconds, far more than copying a few pages, and much more on a loaded
// machine.
//
// Contract: reads that hit end-of-file fill the rest of the buffers with
// zeroes and report the bytes actually read; writes retry short writes until
// done or an error. Interrupted calls are retried.
// Thread rules: call from the loop thread; buffers must stay valid until the
// awaited task completes.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <string>

#include "base/loop.h"
#include "strata/iovec.h"
#include "strata/result.h"

namespace strata {
class IoRing;
class Pipe;
}  // namespace strata

namespace strata::fs {

// How the I/O of one open file runs: which reads and writes may run on the
// loop thread, and whether the rest goes to an io_uring or the thread pool.
// Probe it once after open(); `try_nowait_reads` turns itself off the first
// time the kernel refuses RWF_NOWAIT for the file.
struct InlineIo {
  // Transfers up to this size may run inline; larger ones go to the pool so
  // that their copy runs beside the loop thread's other work. Writes to
  // memory-backed files may be larger when the loop allows it
  // (Loop::max_inline_write(); writers of one tmpfs file serialize on its
  // inode lock anyway, so the pool gives them no parallelism).
  static constexpr size_t kMaxInlineBytes = 128 * 1024;
  // Reads of memory-backed files up to this size run inline. Copying 1 MiB
  // from tmpfs stalls the loop for about 100 us; handing a 256 KiB read to
  // the pool instead (worker wake-up, a copy into a buffer that is then cold
  // in the loop thread's cache, completion wake-up) costs the process about
  // twice the CPU time per byte of a sequential read served over NBD.
  static constexpr size_t kMaxInlineMemoryReadBytes = 1024 * 1024;

  bool memory_backed = false;     // reads and writes never wait on a device
  bool try_nowait_reads = false;  // page-cache hits may be read inline
  // Where the work that does not run inline goes: this io_uring when set,
  // else the thread pool. The ring belongs to the loop (Loop::io_ring()).
  IoRing* ring = nullptr;

  // Inspects the file system under `fd`; `direct` is O_DIRECT (whose
  // RWF_NOWAIT reads would always need the device, so they are not tried).
  static InlineIo probe(int fd, bool direct);
};

Task<Result<int>> co_open(Loop& loop, std::string path, int flags, int mode = 0644);
Task<Result<void>> co_close(Loop& loop, int fd);
// With a policy, transfers it allows run inline (see InlineIo).
Task<Result<size_t>> co_preadv(Loop& loop, int fd, const IoVec& iov, uint64_t offset,
                               InlineIo* policy = nullptr);
Task<Result<size_t>> co_pwritev(Loop& loop, int fd, const IoVec& iov, uint64_t offset,
                                InlineIo* policy = nullptr);
// The system's page size: a pipe slot holds at most one page.
uint64_t page_size();
// Whether the pipe's free slots hold the pages that [offset, offset + len)
// of a file spans, plus `extra_slots`. A pipe holds capacity() / page_size()
// slots and a spliced page takes a whole slot even when only part of it is
// in the range; slots in use are estimated from buffered() (exact when the
// earlier fills were whole pages).
bool pipe_fits_pages(const Pipe& pipe, uint64_t offset, uint64_t len, uint64_t extra_slots = 0);
// Appends `len` bytes of `fd` from `offset` to `pipe` (Pipe::fill_from_file:
// splice, so page-cache and tmpfs pages are shared, not copied; bytes past
// the end of the file are zeroes). With a policy whose file is memory-backed,
// splices up to kMaxInlineMemoryReadBytes run inline, as co_preadv's reads
// do; everything else runs on the pool (splice has no RWF_NOWAIT, so a
// page-cache probe is impossible). The pipe must have room for `len` bytes.
// A file that cannot be spliced (EINVAL with nothing appended, e.g.
// O_DIRECT on some file systems) fails with ENOTSUP and leaves the pipe as
// it was, as does a range whose pages do not fit the pipe's free slots (a
// spliced page takes a whole slot: an unaligned range of capacity() bytes
// does not fit an empty pipe). Other errors may leave part of the range in
// the pipe.
Task<Result<void>> co_splice_to_pipe(Loop& loop, int fd, uint64_t offset, size_t len, Pipe& pipe,
                                     InlineIo* policy = nullptr);
// These four take the policy's ring when it has one.
Task<Result<void>> co_fdatasync(Loop& loop, int fd, InlineIo* policy = nullptr);
// FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE.
Task<Result<void>> co_punch_hole(Loop& loop, int fd, uint64_t offset, uint64_t len,
                                 InlineIo* policy = nullptr);
// FALLOC_FL_ZERO_RANGE (keeps size unless `extend`).
Task<Result<void>> co_zero_range(Loop& loop, int fd, uint64_t offset, uint64_t len, bool extend,
                                 InlineIo* policy = nullptr);
// Plain fallocate(mode 0): reserves blocks.
Task<Result<void>> co_allocate(Loop& loop, int fd, uint64_t offset, uint64_t len,
                               InlineIo* policy = nullptr);
Task<Result<void>> co_ftruncate(Loop& loop, int fd, uint64_t size);
Task<Result<struct stat>> co_fstat(Loop& loop, int fd);

// Synchronous helpers for tools and tests.
Result<struct stat> fstat_now(int fd);
// Raises the soft limit on open files to the hard limit, as QEMU's tools
// do: a server holds a socket and up to a few pipes per client. Best effort.
void raise_open_file_limit();
Error errno_error(int err, const std::string& what);

}  // namespace strata::fs
