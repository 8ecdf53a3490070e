// MirrorJob: copies a node's data to a target while the guest keeps
// writing, goes READY once the target is in sync, and on job-complete moves
// every user of the source to the target (QEMU's mirror; also its active
// commit, where the target is the source's own backing base).
//
// Shape of the graph while it runs: a mirror_top filter
// (block/filters/mirror_top.h) is inserted above the source, so every
// guest request goes through it; the job holds the filter (its main node),
// the source, the target and, for a commit, the nodes between top and base,
// with QEMU's permissions; a commit freezes the chain from the filter down
// to the base. An anonymous dirty bitmap on the source records what is
// still to copy; the copy engine (block/copy/copy_engine.h) drains it with
// many chunks in flight. In write-blocking mode the bitmap screens out
// writes through the filter, which clears and marks for them itself.
//
// Copy modes: in background mode guest writes only mark the bitmap; in
// write-blocking mode they reach the target before they complete (the
// filter hands them to the job), so the job stays in sync under any write
// load (`actively-synced`). An active commit copies in background mode
// for its first sweep over the source, then switches to write-blocking (at
// the latest when READY): it reaches READY under any guest write load, and
// writes made while it is ready reach the base before they complete (a
// Strata strengthening; QEMU stays in background mode and may never get
// ready under a busy guest). block-job-change switches a running mirror
// from background to write-blocking (QEMU 8.2), at its next chunk. The job
// is actively synced while it is write-blocking with nothing left to copy.
//
// Completion: job-complete (or a soft cancel while READY, which finishes
// without the pivot) makes the job drain its source, copy the last dirty
// ranges and flush the target. Then, on success with complete requested,
// the target's backing chain is set as the backing mode says and one graph
// change moves the users of the source (or of `replaces`) to the target
// and takes the filter out; otherwise only the filter goes. With
// carry_bitmaps the source's named bitmaps are first carried to the target,
// so that change tracking goes on across the pivot.
// Thread rules: loop-thread only.
#pragma once

#include <memory>
#include <string>

#include "block/copy/block_copier.h"
#include "block/copy/copy_engine.h"
#include "block/core/graph.h"
#include "block/filters/mirror_top.h"
#include "jobs/block_job.h"
#include "jobs/copy_listener.h"

namespace strata {

class DirtyBitmap;

enum class MirrorSync { kFull, kTop, kNone };
// What becomes of the target's backing chain at completion (QEMU's
// BlockMirrorBackingMode).
enum class MirrorBacking { kLeave, kSourceChain };

struct MirrorParams {
  JobOptions job;
  Node* source = nullptr;
  Node* target = nullptr;
  MirrorSync sync = MirrorSync::kFull;
  MirrorBacking backing = MirrorBacking::kLeave;
  // Copy only what is allocated above this node (sync top: the source's
  // backing; a commit: the base, which is then the target).
  Node* base = nullptr;
  std::string replaces;      // the node replaced at completion (default: source)
  uint64_t granularity = 0;  // 0: the target's default bitmap granularity
  uint64_t buf_size = 0;     // 0: the default (in-flight copy memory)
  OnError on_source_error = OnError::kReport;
  OnError on_target_error = OnError::kReport;
  std::string filter_node_name;
  bool write_blocking = false;
  bool target_is_zero = false;  // the target reads as zeroes when the job starts
  bool unmap = true;
  int64_t speed = 0;
  bool commit = false;  // an active commit (job type "commit")
  // A commit: merge the committed layers' bitmaps into the base's at
  // completion (jobs/commit.h).
  bool merge_bitmaps = false;
  // A mirror: at the pivot, the source's named bitmaps go on with the
  // target (x-carry-bitmaps, see co_carry_bitmaps()).
  bool carry_bitmaps = false;
};

// x-carry-bitmaps: for each named bitmap of `source`, a bitmap of the same
// name, granularity, persistence (when `target` can store bitmaps) and
// enabled state is made on `target` and given the source's bits; a bitmap
// of that name the target has already gets them merged in. A bitmap that
// is busy or inconsistent, or that cannot be made, is left out with a
// warning: the pivot goes on. Call it with the source drained, so the
// bits are complete, just before the target takes the source's place.
Task<void> co_carry_bitmaps(Engine& engine, Node& source, Node& target);

class MirrorJob final : public BlockJob, public MirrorSink {
 public:
  // Builds the graph (filter, held nodes, frozen chain, dirty bitmap) and
  // starts the job; on failure nothing is left behind.
  static Task<Result<std::shared_ptr<MirrorJob>>> co_start(Engine& engine, MirrorParams params);

  MirrorJob(Engine& engine, MirrorParams params);
  ~MirrorJob() override;

  std::string_view type() const override { return params_.commit ? "commit" : "mirror"; }
  Task<Result<void>> co_run() override;
  Task<Result<void>> co_prepare() override;
  Task<void> co_abort() override;
  Task<void> co_clean() override;
  bool can_complete() const override { return is_ready(); }
  Result<void> on_complete() override;
  bool on_cancel(bool force) override;
  void on_interrupt() override;
  bool drained_busy() const override;

  bool actively_synced() const { return actively_synced_; }
  std::optional<bool> actively_synced_info() const override;
  Node* filter() const { return filter_; }

  // MirrorSink: the filter's write-blocking path.
  bool copy_to_target() const override;
  Task<ActiveWrite> co_begin_active_write(uint64_t offset, uint64_t bytes) override;
  Task<void> co_active_write(ActiveWrite& write, MirrorMethod method, uint64_t offset,
                             uint64_t bytes, const IoVec* iov, uint32_t flags) override;
  void note_source_write(uint64_t offset, uint64_t bytes) override;

 protected:
  void on_io_error(bool is_read) override;
  Result<void> on_change(const BlockJobChange& change) override;

 private:
  class Listener;

  Task<Result<void>> co_setup();
  Result<void> hold_nodes();
  Task<Result<void>> co_check_sizes();
  Task<Result<void>> co_init_dirty();
  Task<Result<void>> co_flush_target();
  Task<Result<void>> co_copy_pass();
  bool wants_write_blocking() const;
  void update_remaining();
  Task<void> co_switch_to_write_blocking();
  void enter_write_blocking();
  Task<bool> co_try_finish();
  Task<Result<void>> co_exit(bool abort);
  Task<Result<void>> co_pivot(bool complete);
  Task<void> co_remove_filter();
  void clear_synced(uint64_t offset, uint64_t bytes);
  void mark_dirty(uint64_t offset, uint64_t bytes);
  Task<Result<void>> co_insert_filter();
  bool base_was_read_only_ = false;
  std::optional<Error> pending_error_;

  MirrorParams params_;
  Node* filter_ = nullptr;
  MirrorTopDriver* filter_driver_ = nullptr;
  Child* target_edge_ = nullptr;
  DirtyBitmap* dirty_ = nullptr;
  std::unique_ptr<ZeroMap> target_zeroes_;  // with target_is_zero
  std::unique_ptr<BlockCopier> copier_;
  std::unique_ptr<CopyEngine> engine_;
  std::unique_ptr<Listener> listener_;
  std::unique_ptr<DrainSection> own_drain_;
  bool in_own_drain_ = false;
  bool should_complete_ = false;
  bool write_blocking_ = false;
  bool switch_requested_ = false;  // block-job-change to write-blocking
  bool actively_synced_ = false;
  bool chain_frozen_ = false;
  bool exited_ = false;
  uint64_t active_bytes_in_flight_ = 0;
};

}  // namespace strata
