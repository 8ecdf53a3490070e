// MirrorJob's write-blocking path: a guest write through the filter waits
// for copies of its range, goes to the source, then to the target, and the
// granules it brought in sync are cleared from the dirty bitmap.
#include <algorithm>

#include "block/bitmap/dirty_bitmap.h"
#include "jobs/mirror.h"

namespace strata {

// Not while an error has the job stopped (io-status not ok): the guest's
// writes go to the source only and are marked, instead of each meeting the
// failing target again and raising one more BLOCK_JOB_ERROR (QEMU keeps
// writing to the target then). job-resume turns the path back on.
bool MirrorJob::copy_to_target() const {
  return write_blocking_ && !exited_ && !is_cancelled() && !pending_error_ && engine_ &&
         io_status() == IoStatus::kOk;
}

Task<ActiveWrite> MirrorJob::co_begin_active_write(uint64_t offset, uint64_t bytes) {
  ActiveWrite w;
  w.held = co_await engine_->inflight().co_lock(offset, bytes, true);
  co_return w;
}

// Granules the write covered whole are in sync now (the granule the image
// ends in counts as whole). A partly written one stays as it was: in sync
// if it was, else still owed by the background copy. The bitmap does not
// record writes through the filter in this mode, so no other guest write's
// mark is taken for this one's.
void MirrorJob::clear_synced(uint64_t offset, uint64_t bytes) {
  if (!dirty_) return;
  HBitmap& bits = dirty_->bits();
  uint64_t g = bits.granularity();
  uint64_t size = bits.size();
  uint64_t end = std::min(offset + bytes, size);
  uint64_t from = (offset + g - 1) / g * g;
  uint64_t to = end == size ? size : end / g * g;
  if (from < to) bits.reset(from, to - from);
}

// Every granule the range touches is to copy again.
void MirrorJob::mark_dirty(uint64_t offset, uint64_t bytes) {
  if (!dirty_ || offset >= dirty_->size()) return;
  uint64_t g = dirty_->granularity();
  uint64_t start = offset / g * g;
  uint64_t end = std::min((offset + bytes + g - 1) / g * g, dirty_->size());
  dirty_->bits().set(start, end - start);
}

// In background mode the job's bitmap recorded the write already; in
// write-blocking mode it is marked here (as QEMU 8.2's
// bdrv_mirror_top_do_write), after the source took it so that a copy that
// read the old data runs again.
void MirrorJob::note_source_write(uint64_t offset, uint64_t bytes) {
  if (dirty_ && dirty_->unrecorded_writer()) {
    mark_dirty(offset, bytes);
    actively_synced_ = false;
  }
}

Task<void> MirrorJob::co_active_write(ActiveWrite& w, MirrorMethod method, uint64_t offset,
                                      uint64_t bytes, const IoVec* iov, uint32_t flags) {
  auto self = shared_from_this();
  progress_increase_remaining(bytes);
  active_bytes_in_flight_ += bytes;
  // Only zeroes keep the target reading as zeroes; anything else (or a
  // write that fails half way) may not.
  if (target_zeroes_ && method != MirrorMethod::kZero) target_zeroes_->forget(offset, bytes);
  Result<void> r;
  switch (method) {
    case MirrorMethod::kCopy:
      r = co_await target_edge_->co_pwritev(offset, *iov, flags);
      break;
    case MirrorMethod::kZero:
      r = co_await target_edge_->co_pwrite_zeroes(offset, bytes, flags);
      break;
    case MirrorMethod::kDiscard:
      r = co_await target_edge_->co_pdiscard(offset, bytes);
      break;
  }
  active_bytes_in_flight_ -= bytes;
  if (r) {
    // A discard leaves what either side reads unspecified: the background
    // copy brings those granules in line.
    if (method != MirrorMethod::kDiscard) {
      clear_synced(offset, bytes);
    } else {
      mark_dirty(offset, bytes);
    }
    progress_update(bytes);
    co_return;
  }
  mark_dirty(offset, bytes);
  actively_synced_ = false;
  if (note_error(r.error(), false) == ErrorAction::kReport && !pending_error_) {
    pending_error_ = r.error();
    enter();
  }
}

}  // namespace strata
