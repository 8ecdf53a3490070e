// MirrorJob's exit (QEMU's mirror_exit_common): the dirty bitmap goes, the
// job stops writing to the target, and one graph change sets the target's
// backing chain, moves the users of the replaced node to the target (when
// complete was asked and nothing failed) and takes the filter out.
#include "base/log.h"
#include "block/bitmap/bitmap_ops.h"
#include "block/bitmap/bitmap_store.h"
#include "block/bitmap/dirty_bitmap.h"
#include "block/core/block_status.h"
#include "block/core/graph_change.h"
#include "block/core/reopen.h"
#include "jobs/commit.h"
#include "jobs/mirror.h"
#include "strata/engine.h"

namespace strata {

Task<Result<void>> MirrorJob::co_prepare() {
  co_return co_await co_exit(false);
}

Task<void> MirrorJob::co_abort() {
  (void)co_await co_exit(true);
}

Task<void> MirrorJob::co_clean() {
  // An aborted commit gives the base back read-only; a completed one made
  // it the active layer.
  bool pivoted = should_complete_ && !error() && !is_cancelled();
  if (base_was_read_only_ && !pivoted) {
    auto r = co_await co_set_read_only(engine().graph(), *params_.target, true);
    (void)r;  // as QEMU: a failure here leaves the base writable
  }
}

// Takes the filter out of a graph in which nothing else changed (a start
// that failed half way).
Task<void> MirrorJob::co_remove_filter() {
  if (!filter_) co_return;
  Graph& graph = engine().graph();
  filter_driver_->set_sink(nullptr);
  filter_driver_->stop();
  auto r = co_await graph.co_replace_node(*filter_, *filter_->file()->node());
  if (!r) engine().logger().error("mirror: removing the filter failed: " + r.error().message);
  Node* filter = filter_;
  filter_ = nullptr;
  co_await graph.co_release_if_unused(filter);
}

// The pivot and the filter's removal, as one change.
Task<Result<void>> MirrorJob::co_pivot(bool complete) {
  Graph& graph = engine().graph();
  GraphChange change(graph);
  std::vector<Node*> drained = {params_.target, filter_};
  co_await change.co_drain(std::move(drained));
  Result<void> r;
  if (complete && params_.backing == MirrorBacking::kSourceChain) {
    Node* backing = params_.sync == MirrorSync::kNone ? params_.source : params_.base;
    Child* current = params_.target->backing();
    if (current && backing && current->node() != backing) {
      r = change.retarget(*current, *backing);
    } else if (current && !backing) {
      r = change.detach(*current);
    } else if (!current && backing) {
      auto attached = change.attach(*params_.target, *backing, "backing", kRoleCow);
      if (!attached) r = std::move(attached).error();
    }
  }
  if (r && complete) {
    Node* to_replace = params_.source;
    if (!params_.replaces.empty()) to_replace = graph.find(params_.replaces);
    if (!to_replace) r = Error{ENOENT, "Node name '" + params_.replaces + "' not found"};
    if (r) r = change.replace(*to_replace, *params_.target);
  }
  if (r) r = change.replace(*filter_, *filter_->file()->node());
  if (r) r = change.commit();
  co_await change.co_finish();
  co_return r;
}

Task<Result<void>> MirrorJob::co_exit(bool abort) {
  if (exited_ || !filter_) co_return Result<void>{};
  exited_ = true;
  Graph& graph = engine().graph();
  if (chain_frozen_) graph.unfreeze_chain(*filter_, params_.target);
  chain_frozen_ = false;
  if (dirty_) params_.source->bitmaps().release(dirty_);
  dirty_ = nullptr;
  filter_driver_->set_sink(nullptr);
  if (!own_drain_) {
    in_own_drain_ = true;
    std::vector<Node*> drained = {params_.source};
    own_drain_ = co_await graph.co_drain(std::move(drained));
  }
  // An edge that asks for nothing keeps the target open through the
  // pivot, as QEMU's reference on it does: an implicit target
  // (drive-mirror's) would close with the job's last edge on it.
  auto keeper = graph.attach_root(*params_.target, "mirror target", 0, kPermAll,
                                  {.backend = false, .stays_at_node = true});
  // The job no longer writes to the target (QEMU drops its target
  // BlockBackend first), and the filter asks nothing of its child.
  if (target_edge_) co_await co_remove_node(target_edge_);
  target_edge_ = nullptr;
  filter_driver_->stop();
  bool complete = should_complete_ && !abort;
  if (complete && params_.commit && params_.merge_bitmaps) {
    merge_committed_bitmaps(engine(), *params_.source, *params_.target);
  }
  if (complete && params_.carry_bitmaps) {
    co_await co_carry_bitmaps(engine(), *params_.source, *params_.target);
  }
  if (complete && params_.target->read_only() != params_.source->read_only()) {
    (void)co_await co_set_read_only(graph, *params_.target, params_.source->read_only());
  }
  auto r = co_await co_pivot(complete);
  if (!r) {
    engine().logger().error("mirror: " + r.error().message);
    // Without the pivot, the filter still has to go.
    (void)co_await co_pivot(false);
  }
  Node* filter = filter_;
  co_await co_release();
  filter_ = nullptr;
  (void)filter;
  own_drain_.reset();
  in_own_drain_ = false;
  // Without the pivot, an implicit target closes here.
  if (keeper) co_await graph.co_detach(*keeper);
  co_return r;
}

namespace {

void carry_warning(Engine& engine, const DirtyBitmap& b, const std::string& why) {
  engine.logger().warning("mirror: bitmap '" + b.name() + "' not carried to the target: " + why);
}

// One bitmap: made on the target if it has none of that name, then merged.
Task<void> co_carry_bitmap(Engine& engine, const DirtyBitmap& b, Node& target) {
  Graph& graph = engine.graph();
  BitmapSet* have = target.bitmaps_if_any();
  if (!have || !have->find(b.name())) {
    BitmapAddOptions o{.granularity = b.granularity(),
                       .persistent = b.persistent() && bitmap_store_of(target) != nullptr,
                       .disabled = !b.enabled()};
    auto made = co_await co_add_bitmap(graph, target.name(), b.name(), o);
    if (!made) {
      carry_warning(engine, b, made.error().message);
      co_return;
    }
  }
  auto merged = merge_bitmaps(graph, target.name(), b.name(), {{b.node().name(), b.name()}});
  if (!merged) carry_warning(engine, b, merged.error().message);
}

}  // namespace

Task<void> co_carry_bitmaps(Engine& engine, Node& source, Node& target) {
  BitmapSet* set = source.bitmaps_if_any();
  if (!set) co_return;
  for (DirtyBitmap* b : set->all()) {
    if (b->anonymous()) continue;
    if (auto ok = b->check(kBitmapBusy | kBitmapInconsistent); !ok) {
      carry_warning(engine, *b, ok.error().message);
      continue;
    }
    co_await co_carry_bitmap(engine, *b, target);
  }
}

}  // namespace strata
