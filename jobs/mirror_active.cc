// MirrorJob's write-blocking path: a guest write through the filter waits
// for copies of its range, goes to the source, then to the target, and the
// granules it brought in sync are cleared from the dirty bitmap.
#include <algorithm>

#include "block/bitmap/dirty_bitmap.h"
#include "jobs/mirror.h"

namespace strata {

bool MirrorJob::copy_to_target() const {
  return write_blocking_ && !exited_ && !is_cancelled() && !pending_error_ && engine_;
}

Task<ActiveWrite> MirrorJob::co_begin_active_write(uint64_t offset, uint64_t bytes) {
  ActiveWrite w;
  w.held = co_await engine_->inflight().co_lock(offset, bytes, true);
  if (dirty_) {
    const HBitmap& bits = static_cast<const DirtyBitmap*>(dirty_)->bits();
    uint64_t end = std::min(offset + bytes, bits.size());
    if (offset < bits.size()) w.head_dirty = bits.get(offset);
    if (end > 0) w.tail_dirty = bits.get(end - 1);
  }
  co_return w;
}

// Granules the write covered whole are in sync now; a partly written one is
// in sync only if it was before (else the background copy still owes it).
void MirrorJob::clear_synced(uint64_t offset, uint64_t bytes, const ActiveWrite& w) {
  if (!dirty_) return;
  HBitmap& bits = dirty_->bits();
  uint64_t g = bits.granularity();
  uint64_t size = bits.size();
  uint64_t end = std::min(offset + bytes, size);
  if (offset >= end) return;
  uint64_t head = offset / g * g;
  uint64_t tail = (end - 1) / g * g;
  uint64_t from = w.head_dirty && head < offset ? head + g : head;
  uint64_t to = w.tail_dirty && end % g != 0 && end != size ? tail : std::min(tail + g, size);
  if (from < to) bits.reset(from, to - from);
}

Task<void> MirrorJob::co_active_write(ActiveWrite& w, MirrorMethod method, uint64_t offset,
                                      uint64_t bytes, const IoVec* iov, uint32_t flags) {
  auto self = shared_from_this();
  progress_increase_remaining(bytes);
  active_bytes_in_flight_ += bytes;
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
    if (method != MirrorMethod::kDiscard) clear_synced(offset, bytes, w);
    progress_update(bytes);
    co_return;
  }
  if (dirty_) {
    uint64_t g = dirty_->granularity();
    uint64_t start = offset / g * g;
    uint64_t end = std::min((offset + bytes + g - 1) / g * g, dirty_->size());
    dirty_->bits().set(start, end - start);
  }
  actively_synced_ = false;
  if (note_error(r.error(), false) == ErrorAction::kReport && !pending_error_) {
    pending_error_ = r.error();
    enter();
  }
}

}  // namespace strata
