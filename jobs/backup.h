// BackupJob: a point-in-time copy of a node while the guest keeps writing
// (QEMU's backup job: blockdev-backup, drive-backup).
//
// Shape: the job puts a copy-before-write filter
// (block/filters/copy_before_write.h) above the source, so that from the
// moment the job starts every guest write first sends the old data of the
// clusters it touches to the target; the job itself copies the clusters the
// filter still holds as pending, many chunks at once on the copy engine
// (block/copy/copy_engine.h), through the filter's own edges and under its
// range lock, so each cluster is copied once, by whichever comes first.
// The point in time is the moment the filter takes the source's place
// (the source drained, the sync bitmap frozen in the same step).
//
// Sync modes: full copies every cluster; top only what the source itself
// allocates above its backing node (the rest is left to the target's
// backing file; a first pass drops unallocated clusters from pending);
// bitmap (and incremental, which is bitmap with on-success) what the
// sync bitmap marks; none copies nothing itself: the target gets the old
// data of what the guest overwrites until the job is cancelled (fleecing).
//
// The sync bitmap (QEMU's bitmap-mode): frozen at the start with a
// successor that records the writes made meanwhile; at the end the
// successor takes over the name when the job succeeded or the mode is
// `always` (and not `never`), else it is merged back; after a failure in
// `always` mode the clusters not copied are marked again.
//
// Completion: after the copy the target is flushed; commit and abort settle
// the sync bitmap (jobs of one transaction settle theirs together: a
// grouped transaction's failure restores every bitmap), clean takes the
// filter out. Errors follow on-source-error (reads) and on-target-error
// (writes); a guest write whose copy fails meets the filter's on-cbw-error.
// Thread rules: loop-thread only.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "block/bitmap/dirty_bitmap.h"
#include "block/copy/block_copier.h"
#include "block/copy/copy_engine.h"
#include "block/filters/copy_before_write.h"
#include "jobs/block_job.h"
#include "jobs/copy_listener.h"

namespace strata {

enum class BackupSync { kFull, kTop, kNone, kBitmap };

// x-perf (QEMU's BackupPerf).
struct BackupPerf {
  int64_t max_workers = 64;
  int64_t max_chunk = 0;  // 0: the default chunk
  uint64_t min_cluster_size = 0;
};

struct BackupParams {
  JobOptions job;
  Node* source = nullptr;
  Node* target = nullptr;
  BackupSync sync = BackupSync::kFull;
  DirtyBitmap* bitmap = nullptr;
  BitmapSyncMode bitmap_mode = BitmapSyncMode::kOnSuccess;
  bool compress = false;
  int64_t speed = 0;
  OnError on_source_error = OnError::kReport;
  OnError on_target_error = OnError::kReport;
  std::string filter_node_name;
  OnCbwError on_cbw_error = OnCbwError::kBreakGuestWrite;
  bool discard_source = false;
  BackupPerf perf;
};

class BackupJob final : public BlockJob, private ChunkCopier {
 public:
  // Checks the parameters (QEMU's backup_job_create), freezes the bitmap,
  // inserts the filter and registers the job in `txn` (null: a
  // transaction of its own), created but not started: the caller start()s
  // it, or co_discard()s it when its transaction fails. On failure nothing
  // is left behind.
  static Task<Result<std::shared_ptr<BackupJob>>> co_create(Engine& engine, BackupParams params,
                                                            std::shared_ptr<JobTxn> txn);
  // Cancels a job never started (its transaction failed): created ->
  // aborting -> concluded, the set-up undone.
  Task<void> co_discard();

  BackupJob(Engine& engine, BackupParams params);
  ~BackupJob() override;

  std::string_view type() const override { return "backup"; }
  Task<Result<void>> co_run() override;
  Task<void> co_commit() override;
  Task<void> co_abort() override;
  Task<void> co_clean() override;
  void on_interrupt() override { enter(); }

  Node* filter() const { return filter_; }

 private:
  class Listener;
  Result<void> check() const;
  Task<Result<void>> co_setup();
  Task<void> co_undo_setup();
  Task<Result<void>> co_insert_filter();
  Result<void> hold_nodes();
  Result<void> init_pending();
  Task<Result<void>> co_skip_unallocated();
  Task<Result<void>> co_copy_all();
  Task<ChunkOutcome> co_copy(uint64_t offset, uint64_t bytes) override;
  void sync_progress();
  Task<void> co_yield_to_guest();
  uint64_t chunk_for_speed() const;
  Task<void> co_remove_filter();
  void settle_bitmap(bool success);

  BackupParams params_;
  Node* filter_ = nullptr;
  CopyBeforeWriteDriver* cbw_ = nullptr;
  std::unique_ptr<BlockCopier> copier_;
  bool bitmap_frozen_ = false;
  uint64_t reported_ = 0;  // copied bytes already counted as progress
};

}  // namespace strata
