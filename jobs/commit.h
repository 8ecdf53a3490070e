// block-commit: pushes the data of the layers from `top` down to `base` into
// `base` (QEMU's commit and active commit).
//
// An intermediate commit (top is below the active layer and nobody writes to
// it) is a CommitJob: a commit_top filter goes above `top`, the chain from
// the filter down to `base` is frozen, the job copies every range allocated
// above `base` into it (many chunks at once, zeroes as write-zeroes,
// unallocated ranges skipped), and at completion the overlay's backing
// file name is rewritten (`backing-file`, else the base's file name) before
// the overlay's backing edge is moved from the filter to `base`: the
// committed layers drop out of the chain. On failure or cancel the filter is
// taken out and the chain is as before (the base may hold some of the data
// already, which changes nothing the chain reads). A crash at any point
// leaves a chain that reads what the guest wrote: the header changes only
// after every range is in the base.
//
// An active commit (top is the active layer, or someone writes to it) is a
// MirrorJob into the base (jobs/mirror.h): it goes ready, keeps the base in
// sync, and pivots the users of top onto the base at job-complete.
//
// Either way a read-only base is reopened read-write for the job, and back
// to read-only afterwards unless it became the active layer. With
// `merge_bitmaps` (a Strata extension) every named bitmap of the base
// receives, at completion, the bitmaps of the same name in the committed
// layers, so that change tracking survives the commit.
// Thread rules: loop-thread only.
#pragma once

#include <memory>
#include <string>

#include "block/copy/block_copier.h"
#include "block/copy/copy_engine.h"
#include "jobs/block_job.h"
#include "jobs/copy_listener.h"

namespace strata {

struct CommitParams {
  JobOptions job;
  Node* active = nullptr;  // the device's node (QEMU's bs)
  Node* top = nullptr;
  Node* base = nullptr;
  std::string backing_file;  // the name written into the overlay (intermediate)
  int64_t speed = 0;
  OnError on_error = OnError::kReport;
  std::string filter_node_name;
  bool merge_bitmaps = false;
};

// Whether committing `top` of `active` is an active commit (QEMU's rule:
// someone holds write on top, or top is the active layer).
bool is_active_commit(const Node& active, const Node& top);

// Starts the right kind of commit; on failure nothing is left behind.
Task<Result<std::shared_ptr<BlockJob>>> co_start_commit(Engine& engine, CommitParams params);

// Merges into every named bitmap of `base` the bitmaps of the same name in
// the layers from `top` down to `base` (exclusive). Bitmaps that cannot be
// merged (inconsistent, busy) are left out and logged.
void merge_committed_bitmaps(Engine& engine, Node& top, Node& base);

class CommitJob final : public BlockJob {
 public:
  CommitJob(Engine& engine, CommitParams params);
  ~CommitJob() override;

  static Task<Result<std::shared_ptr<CommitJob>>> co_start(Engine& engine, CommitParams params);

  std::string_view type() const override { return "commit"; }
  Task<Result<void>> co_run() override;
  Task<Result<void>> co_prepare() override;
  Task<void> co_abort() override;
  Task<void> co_clean() override;

 private:
  Task<Result<void>> co_setup();
  Task<Result<void>> co_insert_filter();
  Result<void> hold_nodes();
  Task<Result<void>> co_update_overlays();
  Task<void> co_remove_filter();
  void unfreeze();

  CommitParams params_;
  Node* filter_ = nullptr;
  Child* top_edge_ = nullptr;
  Child* base_edge_ = nullptr;
  bool chain_frozen_ = false;
  bool base_was_read_only_ = false;
  JobCopyListener listener_;
  std::unique_ptr<BlockCopier> copier_;
  std::unique_ptr<CopyEngine> engine_;
};

}  // namespace strata
