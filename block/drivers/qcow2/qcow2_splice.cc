// qcow2: splice reads. The range is mapped run by run in guest order, under
// the metadata lock as co_preadv maps it, and each run is appended to the
// pipe: data clusters are spliced from the file child (no copy where the
// file allows it), zero clusters and the part past the backing file's end
// are zero fills, unallocated runs are spliced from the backing child, and
// compressed clusters are decoded into a buffer that is copied in. With an
// external data file, data runs come from it.
//
// A run's host bytes sit at the same offset within their pages as its guest
// bytes (clusters are whole pages), so the runs take the pipe slots of the
// guest range's pages, plus one when a run written by copy starts a new
// slot after a partial first page. Ranges that may not fit, and images
// whose subclusters are smaller than a page (a run, and a slot, per
// subcluster), answer ENOTSUP before anything is appended.
#include "base/fs.h"
#include "base/pipe.h"
#include "block/drivers/qcow2/qcow2.h"

namespace strata::qcow2 {

Task<Result<void>> Qcow2Driver::co_splice_read(uint64_t offset, uint64_t bytes, Pipe& pipe) {
  if (subcluster_size() < fs::page_size() || !fs::pipe_fits_pages(pipe, offset, bytes, 1)) {
    co_return Error{ENOTSUP, "the pipe may have no room for the range's pages"};
  }
  const size_t start = pipe.buffered();
  for (uint64_t pos = 0; pos < bytes;) {
    Mapping m;
    {
      co_await lock_->co_lock();
      CoMutex::Guard guard(lock_.get());
      STRATA_CO_TRY_ASSIGN(m, co_await co_map(offset + pos, bytes - pos));
    }
    auto r = co_await co_splice_run(offset + pos, m, pipe);
    // A child that cannot splice appended nothing of this run. Before
    // anything is in the pipe the whole read falls back to co_preadv;
    // after that, only this run is read and copied in.
    if (!r && r.error().code == ENOTSUP) {
      if (pipe.buffered() == start) co_return r;
      r = co_await co_splice_copied(offset + pos, m, pipe);
    }
    STRATA_CO_TRY(r);
    pos += m.bytes;
  }
  co_return Result<void>{};
}

Task<Result<void>> Qcow2Driver::co_splice_run(uint64_t offset, const Mapping& m, Pipe& pipe) {
  switch (m.type) {
    case ClusterType::kUnallocated:
    case ClusterType::kUnallocatedAlloc:
      co_return co_await co_splice_backing(offset, m.bytes, pipe);
    case ClusterType::kZeroPlain:
    case ClusterType::kZeroAlloc:
      co_return pipe.fill_zeroes(m.bytes);
    case ClusterType::kNormal:
      if (!data_file_) break;
      co_return co_await data_file_->co_splice_read(m.host_offset, m.bytes, pipe);
    case ClusterType::kCompressed:
      co_return co_await co_splice_copied(offset, m, pipe);
    case ClusterType::kInvalid:
      break;
  }
  co_return Error{EIO, "qcow2: the data file is not open"};
}

// As co_read_backing: the backing child's data, zeroes past its end or
// without one.
Task<Result<void>> Qcow2Driver::co_splice_backing(uint64_t offset, uint64_t bytes, Pipe& pipe) {
  uint64_t n = backing_bytes(offset, bytes);
  if (n) STRATA_CO_TRY(co_await backing()->co_splice_read(offset, n, pipe));
  co_return pipe.fill_zeroes(bytes - n);
}

// Reads a run as co_preadv does and copies it into the pipe.
Task<Result<void>> Qcow2Driver::co_splice_copied(uint64_t offset, const Mapping& m, Pipe& pipe) {
  AlignedBuffer buf(m.bytes);
  STRATA_CO_TRY(co_await co_read_run(offset, m, buf.iov()));
  co_return pipe.fill_from(buf.iov());
}

}  // namespace strata::qcow2
