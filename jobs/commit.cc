#include "jobs/commit.h"

#include "base/log.h"
#include "block/bitmap/bitmap_ops.h"
#include "block/core/block_status.h"
#include "block/core/graph_change.h"
#include "block/core/image_ops.h"
#include "block/core/reopen.h"
#include "jobs/job_registry.h"
#include "jobs/mirror.h"
#include "strata/engine.h"

namespace strata {

namespace {
constexpr uint64_t kGranularity = 64 << 10;
constexpr uint64_t kChunk = 1 << 20;
constexpr unsigned kWorkers = 8;

// The node below filters (QEMU's bdrv_skip_filters).
const Node* skip_filters(const Node* n) {
  while (n && n->filtered() && !n->backing()) n = n->filtered()->node();
  return n;
}
}  // namespace

bool is_active_commit(const Node& active, const Node& top) {
  return (top.cumulative_perm() & kPermWrite) || skip_filters(&top) == skip_filters(&active);
}

void merge_committed_bitmaps(Engine& engine, Node& top, Node& base) {
  BitmapSet* set = base.bitmaps_if_any();
  if (!set) return;
  Graph& graph = engine.graph();
  for (DirtyBitmap* target : set->all()) {
    if (target->anonymous()) continue;
    std::vector<BitmapSource> sources;
    for (Node* n = &top; n && n != &base; n = next_layer(*n)) {
      BitmapSet* layer = n->bitmaps_if_any();
      DirtyBitmap* src = layer ? layer->find(target->name()) : nullptr;
      if (!src) continue;
      if (auto ok = src->check(kBitmapAllowRo); !ok) {
        engine.logger().warning("commit: bitmap '" + src->name() + "' of '" + n->name() +
                                "' not merged: " + ok.error().message);
        continue;
      }
      sources.push_back({n->name(), src->name()});
    }
    if (sources.empty()) continue;
    auto r = merge_bitmaps(graph, base.name(), target->name(), sources);
    if (!r) {
      engine.logger().warning("commit: bitmap '" + target->name() + "' of '" + base.name() +
                              "' not merged: " + r.error().message);
    }
  }
}

Task<Result<std::shared_ptr<BlockJob>>> co_start_commit(Engine& engine, CommitParams params) {
  if (!is_active_commit(*params.active, *params.top)) {
    auto job = co_await CommitJob::co_start(engine, std::move(params));
    if (!job) co_return std::move(job).error();
    co_return std::shared_ptr<BlockJob>(*job);
  }
  MirrorParams m;
  m.job = params.job;
  m.source = params.top;
  m.target = params.base;
  m.sync = MirrorSync::kTop;
  m.base = params.base;
  m.on_source_error = params.on_error;
  m.on_target_error = params.on_error;
  m.filter_node_name = params.filter_node_name;
  m.speed = params.speed;
  m.commit = true;
  m.merge_bitmaps = params.merge_bitmaps;
  auto job = co_await MirrorJob::co_start(engine, std::move(m));
  if (!job) co_return std::move(job).error();
  co_return std::shared_ptr<BlockJob>(*job);
}

CommitJob::CommitJob(Engine& engine, CommitParams params)
    : BlockJob(engine, params.job), params_(std::move(params)), listener_(*this) {}

CommitJob::~CommitJob() = default;

Task<Result<std::shared_ptr<CommitJob>>> CommitJob::co_start(Engine& engine, CommitParams params) {
  if (skip_filters(params.top) == skip_filters(params.base)) {
    co_return Error{EINVAL, "Invalid files for merge: top and base are the same"};
  }
  auto job = std::make_shared<CommitJob>(engine, std::move(params));
  STRATA_CO_TRY(engine.jobs().add(job));
  auto set_up = co_await job->co_setup();
  if (!set_up) {
    co_await job->co_abort();
    co_await job->co_clean();
    co_await job->co_early_fail();
    co_return std::move(set_up).error();
  }
  job->start();
  co_return job;
}

// The filter goes above `top`: the overlay's backing edge moves to it.
Task<Result<void>> CommitJob::co_insert_filter() {
  Graph& graph = engine().graph();
  nlohmann::json options = {{"driver", "commit_top"}, {"file", params_.top->name()}};
  if (!params_.filter_node_name.empty()) options["node-name"] = params_.filter_node_name;
  STRATA_CO_TRY_ASSIGN(filter_, co_await graph.co_add_internal(std::move(options)));
  GraphChange change(graph);
  std::vector<Node*> drained = {params_.top};
  co_await change.co_drain(std::move(drained));
  auto r = change.replace(*params_.top, *filter_);
  if (r) r = change.commit();
  co_await change.co_finish();
  if (!r) {
    co_await graph.co_release_if_unused(filter_);
    filter_ = nullptr;
  }
  co_return r;
}

Result<void> CommitJob::hold_nodes() {
  Graph& graph = engine().graph();
  STRATA_TRY(add_node(*params_.active, "main node", 0, kPermAll));
  uint64_t shared = kPermWriteUnchanged | kPermWrite;
  for (Node* n = params_.top; n && n != params_.base; n = next_layer(*n)) {
    STRATA_TRY(add_node(*n, "intermediate node", 0, shared));
  }
  STRATA_TRY(graph.freeze_chain(*filter_, params_.base));
  chain_frozen_ = true;
  uint64_t base_perm = kPermConsistentRead | kPermWrite;
  if (params_.base->size() < params_.top->size()) base_perm |= kPermResize;
  STRATA_TRY_ASSIGN(base_edge_, add_backend_node(*params_.base, "base", base_perm,
                                                 kPermConsistentRead | kPermWriteUnchanged));
  STRATA_TRY_ASSIGN(top_edge_, add_backend_node(*params_.top, "top", 0, kPermAll));
  return {};
}

Task<Result<void>> CommitJob::co_setup() {
  if (params_.base->read_only()) {
    STRATA_CO_TRY(co_await co_set_read_only(engine().graph(), *params_.base, false));
    base_was_read_only_ = true;
  }
  STRATA_CO_TRY(co_await co_insert_filter());
  STRATA_CO_TRY(hold_nodes());
  STRATA_CO_TRY(set_speed(params_.speed));
  set_error_policies(params_.on_error, params_.on_error);
  BlockCopierOptions copy{.base = params_.base, .skip_unallocated = true, .max_chunk = kChunk};
  copier_ = std::make_unique<BlockCopier>(
      *top_edge_, *base_edge_, copy,
      [this](uint64_t bytes) -> Task<void> { co_await co_throttle(bytes); });
  engine_ = std::make_unique<CopyEngine>(engine().loop(), *copier_, listener_,
                                         CopyConfig{.max_chunk = kChunk, .max_workers = kWorkers});
  co_return Result<void>{};
}

Task<Result<void>> CommitJob::co_run() {
  uint64_t size = params_.top->size();
  progress_set_remaining(size);
  if (params_.base->size() < size) {
    STRATA_CO_TRY(co_await base_edge_->co_truncate(size, false, Preallocation::kOff));
  }
  HBitmap work(size, __builtin_ctzll(kGranularity));
  work.set_all();
  auto r = co_await engine_->co_run(work);
  if (!r && r.error().code == ECANCELED) co_return Result<void>{};
  co_return r;
}

void CommitJob::unfreeze() {
  if (chain_frozen_ && filter_) engine().graph().unfreeze_chain(*filter_, params_.base);
  chain_frozen_ = false;
}

// Every overlay above the filter (a backing edge) names the base from now
// on, in its image header (QEMU's bdrv_drop_intermediate update_filename).
Task<Result<void>> CommitJob::co_update_overlays() {
  std::string file = params_.backing_file;
  if (file.empty()) file = params_.base->driver().filename();
  std::string format = params_.base->driver_name();
  std::vector<Node*> overlays;
  for (Child* p : filter_->parents()) {
    if (p->parent() && (p->role() & kRoleCow)) overlays.push_back(p->parent());
  }
  for (Node* overlay : overlays) {
    ImageOps* ops = overlay->driver().image_ops();
    if (!ops)
      co_return Error{ENOTSUP, "Could not update backing file link: Operation not supported"};
    bool was_read_only = overlay->read_only();
    if (was_read_only) STRATA_CO_TRY(co_await co_set_read_only(engine().graph(), *overlay, false));
    std::vector<Node*> overlay_only = {overlay};
    auto drained = co_await engine().graph().co_drain(std::move(overlay_only));
    auto r = co_await ops->co_change_backing_file(file, format);
    drained.reset();
    if (was_read_only) (void)co_await co_set_read_only(engine().graph(), *overlay, true);
    if (!r)
      co_return Error{r.error().code, "Could not update backing file link: " + r.error().message};
  }
  co_return Result<void>{};
}

Task<Result<void>> CommitJob::co_prepare() {
  unfreeze();
  if (base_edge_) co_await co_remove_node(base_edge_);
  base_edge_ = nullptr;
  if (params_.merge_bitmaps) merge_committed_bitmaps(engine(), *params_.top, *params_.base);
  STRATA_CO_TRY(co_await co_update_overlays());
  Graph& graph = engine().graph();
  GraphChange change(graph);
  std::vector<Node*> drained = {filter_};
  co_await change.co_drain(std::move(drained), DrainScope::kSubtree);
  auto r = change.replace(*filter_, *params_.base);
  if (r) r = change.commit();
  co_await change.co_finish();
  if (!r) co_return r;
  Node* filter = filter_;
  filter_ = nullptr;
  co_await graph.co_release_if_unused(filter);
  co_return Result<void>{};
}

Task<void> CommitJob::co_remove_filter() {
  if (!filter_) co_return;
  Graph& graph = engine().graph();
  auto r = co_await graph.co_replace_node(*filter_, *filter_->file()->node());
  if (!r) engine().logger().error("commit: removing the filter failed: " + r.error().message);
  Node* filter = filter_;
  filter_ = nullptr;
  co_await graph.co_release_if_unused(filter);
}

Task<void> CommitJob::co_abort() {
  unfreeze();
  if (base_edge_) co_await co_remove_node(base_edge_);
  base_edge_ = nullptr;
  co_await co_remove_filter();
}

Task<void> CommitJob::co_clean() {
  if (base_was_read_only_) {
    (void)co_await co_set_read_only(engine().graph(), *params_.base, true);
    base_was_read_only_ = false;
  }
}

}  // namespace strata
