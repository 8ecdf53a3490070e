// copy-before-write: the filter under a backup job and under pull-mode
// fleecing (QEMU's copy-before-write). It is put above a source node and
// keeps a point-in-time view of it: before a guest write, write-zeroes or
// discard reaches a cluster of the source whose old data the view still
// needs, that old data is copied to the `target` node; reads and every
// other request pass through.
//
// Options (blockdev-add, as QEMU's BlockdevOptionsCbw): `file` (the
// source), `target`, `bitmap` {node, name} (only the clusters it marks, when
// the filter opens, are kept and readable: incremental fleecing),
// `on-cbw-error` break-guest-write (default: a copy that fails fails the
// guest's write, the view stays good) or break-snapshot (the write goes
// on, and every later read of the view fails with EACCES), `cbw-timeout`
// (seconds a guest write waits for its copy; 0 waits for ever; a copy that
// times out counts as failed with ETIMEDOUT, and finishes in the
// background), `min-cluster-size` (a power of two). Jobs also pass
// `x-discard-source` (backup's discard-source: a copied cluster is
// discarded on the source).
//
// Clusters: the unit of copying is the copy cluster, max(64 KiB, the
// target's cluster size, min-cluster-size). `pending` marks the clusters
// whose old data is still to copy, `done` those copied, `access` those the
// view covers. Only the clusters a write touches are copied, and only
// the guest writes to them wait; a cluster already copied, or not in the
// view, costs a write nothing but one bitmap test.
//
// Locking: one range lock (exclusive for copies, shared for view reads from
// the source) orders copies, guest writes that need a copy and view reads;
// a guest write to clusters no longer pending takes no lock. Copies into the
// target are serialising there (kReqSerialising), so an image backed by the
// source (the legacy fleecing recipe) never serves a read of a cluster
// half way through its copy.
//
// Permissions (QEMU's cbw_child_perm): WRITE on the target, sharing all but
// RESIZE; on the source the filter's parents' needs plus CONSISTENT_READ,
// and once it has parents it shares neither WRITE nor RESIZE there, so
// every writer goes through it. With x-discard-source it takes WRITE.
//
// The view is read through SnapshotApi (the snapshot-access driver); a
// backup job drives the copy of what is pending with co_copy_range().
// Thread rules: loop-thread only.
#pragma once

#include <memory>
#include <optional>

#include "base/sync.h"
#include "block/bitmap/hbitmap.h"
#include "block/copy/block_copier.h"
#include "block/core/filter.h"
#include "block/core/range_lock.h"
#include "block/core/snapshot_api.h"

namespace strata {

enum class OnCbwError { kBreakGuestWrite, kBreakSnapshot };

class CopyBeforeWriteDriver final : public FilterDriver, public SnapshotApi {
 public:
  CopyBeforeWriteDriver();
  ~CopyBeforeWriteDriver() override;

  Task<Result<void>> co_open(OpenContext& ctx) override;
  Task<void> co_close() override;
  Task<Result<void>> co_pwritev(uint64_t offset, const IoVec& iov, uint32_t flags) override;
  Task<Result<void>> co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) override;
  Task<Result<void>> co_pdiscard(uint64_t offset, uint64_t bytes) override;
  void child_perm(const Child& child, uint64_t perm, uint64_t shared, uint64_t* nperm,
                  uint64_t* nshared) const override;
  SnapshotApi* snapshot_api() override { return this; }

  Task<Result<void>> co_snapshot_preadv(uint64_t offset, const IoVec& iov) override;
  Task<Result<BlockStatus>> co_snapshot_block_status(uint64_t offset, uint64_t bytes) override;
  Task<Result<void>> co_snapshot_pdiscard(uint64_t offset, uint64_t bytes) override;

  // For a backup job (jobs/backup.h).
  uint64_t copy_cluster() const { return cluster_; }
  Child* target() const { return target_; }
  Child* source() const { return file_; }
  // The clusters still to copy. A job narrows it before the filter has
  // users (its sync mode and bitmap) and may drop clusters it finds it
  // need not copy (sync top) at any time.
  HBitmap& pending() { return *pending_; }
  // How copies are made (block status above a base, compression, chunk
  // size); the default copies every cluster as it reads. Before use.
  void set_copy_options(BlockCopierOptions options);
  const BlockCopierOptions& copy_options() const { return options_; }
  // Copies the pending clusters of [offset, offset + bytes) (cluster
  // aligned) with `copier`, holding the range against guest writes and
  // view reads; those copied are done. A broken view fails with EACCES.
  Task<ChunkOutcome> co_copy_range(uint64_t offset, uint64_t bytes, BlockCopier& copier);
  bool broken() const { return broken_; }
  // Guest writes waiting now for their old data to reach the target. A job
  // copying beside them holds back new chunks while there are any: at a
  // slow target each chunk would queue ahead of the guest's copies.
  size_t guest_waiters() const { return guest_waiters_; }
  // Bytes copied so far (by guest writes and by the job), and still to
  // copy: the job's progress.
  uint64_t copied_bytes() const { return copied_bytes_; }
  uint64_t pending_bytes() const;
  // The job is over: nothing is copied any more and the filter takes no
  // permission on its source (so the source's users can go back to it
  // while the filter is still attached; mirror_top's stop()).
  void stop() { stopped_ = true; }

 private:
  struct Call;
  Result<void> parse_options(OpenContext& ctx);
  Result<void> init_bitmaps(OpenContext& ctx);
  Task<Result<void>> co_before_write(uint64_t offset, uint64_t bytes);
  Task<ChunkOutcome> co_copy_in_time(uint64_t offset, uint64_t bytes);
  Task<void> co_mark_copied(uint64_t offset, uint64_t bytes);
  Task<void> co_background_copy(std::shared_ptr<Call> call, uint64_t offset, uint64_t bytes);
  // The extent at `offset` (at most `bytes`) that is all done or all not
  // done, or EACCES when the range is outside the view: any of it when
  // `whole` (a read), else its start (block status answers for the part
  // of the view it begins with).
  Result<std::pair<bool, uint64_t>> view_extent(uint64_t offset, uint64_t bytes, bool whole) const;
  Task<Result<void>> co_read_source(uint64_t offset, const IoVec& iov, bool* retry);

  Child* target_ = nullptr;
  OnCbwError on_error_ = OnCbwError::kBreakGuestWrite;
  uint64_t timeout_ns_ = 0;
  uint64_t min_cluster_ = 0;
  bool discard_source_ = false;
  uint64_t cluster_ = 0;
  std::optional<HBitmap> pending_;
  std::optional<HBitmap> done_;
  std::optional<HBitmap> access_;
  std::unique_ptr<RangeLock> lock_;
  BlockCopierOptions options_;
  std::unique_ptr<BlockCopier> copier_;
  bool broken_ = false;
  bool stopped_ = false;
  uint64_t copied_bytes_ = 0;
  size_t background_ = 0;
  std::unique_ptr<CoQueue> idle_;
  size_t guest_waiters_ = 0;
};

// The registered driver name.
inline constexpr const char* kCopyBeforeWriteDriver = "copy-before-write";

}  // namespace strata
