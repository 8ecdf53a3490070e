// qcow2: blockdev-reopen between read-only and read-write, as QEMU's
// qcow2_reopen_prepare / qcow2_reopen_commit and its bitmap helpers.
//
// Going read-only, prepare does what a clean close does while the node can
// still write: persistent bitmaps are stored (their `in_use` flag cleared),
// caches are flushed and the dirty bit of a lazy-refcounts image cleared.
// Commit then stops writing and makes the persistent bitmaps read-only. If
// the reopen is aborted instead, the bitmaps' entries are marked in-use on
// disk again once the abort has finished, so the image never shows a
// recording bitmap as consistent.
//
// Going read-write, prepare only refuses a corrupt image; the file is
// writable after commit, so the bitmaps' entries are marked in-use (and the
// bitmaps made writable) when the reopen finishes. That step cannot fail
// the reopen any more: as in QEMU, a failure leaves the bitmaps read-only
// and is logged. A dirty lazy-refcounts image is repaired first, as a
// read-write open would.
#include "base/log.h"
#include "block/drivers/qcow2/bitmap_store.h"
#include "block/drivers/qcow2/qcow2.h"
#include "strata/engine.h"

namespace strata::qcow2 {

Task<Result<void>> Qcow2Driver::co_reopen_prepare(const NodeFlags& flags) {
  reopen_change_ = ReopenChange::kNone;
  if (flags.read_only == node().read_only()) co_return Result<void>{};
  if (!flags.read_only) {
    if ((header_.incompatible_features & kIncompatCorrupt) && !check_mode_) {
      co_return Error{EACCES, "qcow2: Image is corrupt; cannot be opened read/write"};
    }
    reopen_change_ = ReopenChange::kToReadWrite;
    co_return Result<void>{};
  }
  STRATA_CO_TRY(co_await co_prepare_read_only());
  reopen_change_ = ReopenChange::kToReadOnly;
  co_return Result<void>{};
}

// QEMU's qcow2_reopen_bitmaps_ro, bdrv_flush and qcow2_mark_clean.
Task<Result<void>> Qcow2Driver::co_prepare_read_only() {
  if (!writable_ || !l2_cache_) co_return Result<void>{};
  STRATA_CO_TRY(co_await co_store_qcow2_bitmaps(node()));
  auto r = co_await co_flush_and_mark_clean();
  if (!r) (void)co_await co_mark_qcow2_bitmaps_in_use(node(), false);
  co_return r;
}

Task<Result<void>> Qcow2Driver::co_flush_and_mark_clean() {
  co_await lock_->co_lock();
  CoMutex::Guard guard(lock_.get());
  STRATA_CO_TRY(co_await co_flush_metadata());
  STRATA_CO_TRY(co_await file_->co_flush());
  if (header_.incompatible_features & kIncompatDirty) {
    STRATA_CO_TRY(co_await co_set_dirty_bit(false));
  }
  co_return Result<void>{};
}

void Qcow2Driver::reopen_commit() {
  if (reopen_change_ == ReopenChange::kToReadOnly) {
    writable_ = false;
    set_qcow2_bitmaps_read_only(node());
  } else if (reopen_change_ == ReopenChange::kToReadWrite) {
    writable_ = true;
  }
}

Task<void> Qcow2Driver::co_reopen_finish(bool committed) {
  ReopenChange change = std::exchange(reopen_change_, ReopenChange::kNone);
  bool to_rw = committed && change == ReopenChange::kToReadWrite;
  bool ro_aborted = !committed && change == ReopenChange::kToReadOnly;
  if (!to_rw && !ro_aborted) co_return;
  if (to_rw && (header_.incompatible_features & kIncompatDirty) && !check_mode_) {
    if (auto r = co_await co_repair_dirty(); !r) {
      node().engine().logger().error("qcow2 node '" + node().name() + "': " + r.error().message);
    }
  }
  if (auto r = co_await co_mark_qcow2_bitmaps_in_use(node(), to_rw); !r) {
    node().engine().logger().error(node().name() +
                                   ": Failed to make dirty bitmaps writable: " + r.error().message);
  }
}

}  // namespace strata::qcow2
