#include "jobs/backup.h"

#include <algorithm>

#include "base/log.h"
#include "block/core/block_status.h"
#include "block/core/graph_change.h"
#include "jobs/job_registry.h"
#include "strata/engine.h"

namespace strata {

namespace {
constexpr uint64_t kDefaultChunk = 1 << 20;
constexpr int64_t kMaxWorkers = INT32_MAX;
// How often a job held back by waiting guest writes looks again.
constexpr uint64_t kGuestPollNs = 1000 * 1000;
}  // namespace

// Progress is the filter's: every cluster copied, by a chunk or a guest
// write, counts once. A broken snapshot cannot be retried: the job stops
// whatever the policy.
class BackupJob::Listener final : public JobCopyListener {
 public:
  explicit Listener(BackupJob& job) : JobCopyListener(job), job_(job) {}
  // The speed limit is waited for here, in the run coroutine, where a
  // pause or cancel cuts the wait short; chunks count at their start.
  // With a speed below the chunk size, chunks shrink to it (down to one
  // cluster), so that the rate holds over every second.
  Task<bool> co_before_chunk() override {
    co_await job_.co_yield_to_guest();
    co_await job_.co_rate_limit(0);
    if (engine_) {
      CopyConfig config = engine_->config();
      config.max_chunk = job_.chunk_for_speed();
      engine_->set_config(config);
    }
    co_return co_await JobCopyListener::co_before_chunk();
  }
  void set_engine(CopyEngine* engine) { engine_ = engine; }
  void on_progress(uint64_t) override { job_.sync_progress(); }
  Task<ChunkErrorStep> co_on_error(Error error, bool read_failed) override {
    job_.sync_progress();
    if (job_.cbw_->broken()) co_return ChunkErrorStep::kStop;
    co_return co_await JobCopyListener::co_on_error(std::move(error), read_failed);
  }

 private:
  BackupJob& job_;
  CopyEngine* engine_ = nullptr;
};

BackupJob::BackupJob(Engine& engine, BackupParams params)
    : BlockJob(engine, params.job), params_(std::move(params)) {}

BackupJob::~BackupJob() = default;

Task<Result<std::shared_ptr<BackupJob>>> BackupJob::co_create(Engine& engine, BackupParams params,
                                                              std::shared_ptr<JobTxn> txn) {
  auto job = std::make_shared<BackupJob>(engine, std::move(params));
  STRATA_CO_TRY(job->check());
  STRATA_CO_TRY(co_await job->co_setup());
  auto added = engine.jobs().add(job, std::move(txn));
  if (!added) {
    co_await job->co_undo_setup();
    co_return std::move(added).error();
  }
  auto held = job->hold_nodes();
  if (!held) {
    co_await job->co_undo_setup();
    co_await job->co_early_fail();
    co_return std::move(held).error();
  }
  co_return job;
}

// As QEMU's job_cancel_sync on a job its transaction never started:
// aborting, concluded (and null); abort and clean undo the set-up.
Task<void> BackupJob::co_discard() {
  co_await co_cancel_sync(true);
}

Task<void> BackupJob::co_undo_setup() {
  settle_bitmap(false);
  co_await co_remove_filter();
}

// QEMU's backup_job_create checks, in its order.
Result<void> BackupJob::check() const {
  Node* bs = params_.source;
  Node* target = params_.target;
  if (bs == target) return Error{EINVAL, "Source and target cannot be the same"};
  if (params_.compress && !target->driver().supports_compressed_writes()) {
    // QEMU names the target's device, which a node has none of.
    return Error{ENOTSUP, "Compression is not supported for this drive "};
  }
  STRATA_TRY(bs->check_op(BlockOp::kBackupSource));
  STRATA_TRY(target->check_op(BlockOp::kBackupTarget));
  if (params_.perf.max_workers < 1 || params_.perf.max_workers > kMaxWorkers) {
    return Error{EINVAL, "max-workers must be between 1 and " + std::to_string(kMaxWorkers)};
  }
  if (params_.perf.max_chunk < 0) {
    return Error{EINVAL, "max-chunk must be zero (which means no limit) or positive"};
  }
  if (params_.bitmap && params_.bitmap_mode != BitmapSyncMode::kNever) {
    STRATA_TRY(params_.bitmap->check(kBitmapDefault));
  }
  if (bs->size() != target->size()) {
    return Error{EINVAL, "Source and target image have different sizes"};
  }
  return {};
}

// The point in time: with the source drained, the sync bitmap is frozen
// and the filter takes the source's place.
Task<Result<void>> BackupJob::co_setup() {
  std::vector<Node*> drained = {params_.source};
  auto section = co_await engine().graph().co_drain(std::move(drained));
  if (params_.bitmap) {
    STRATA_CO_TRY(params_.bitmap->set().create_successor(*params_.bitmap));
    bitmap_frozen_ = true;
  }
  auto r = co_await co_insert_filter();
  if (!r) settle_bitmap(false);
  co_return r;
}

Task<Result<void>> BackupJob::co_insert_filter() {
  Graph& graph = engine().graph();
  nlohmann::json options = {{"driver", kCopyBeforeWriteDriver},
                            {"file", params_.source->name()},
                            {"target", params_.target->name()}};
  if (!params_.filter_node_name.empty()) options["node-name"] = params_.filter_node_name;
  if (params_.on_cbw_error == OnCbwError::kBreakSnapshot)
    options["on-cbw-error"] = "break-snapshot";
  if (params_.perf.min_cluster_size) options["min-cluster-size"] = params_.perf.min_cluster_size;
  if (params_.discard_source) options["x-discard-source"] = true;
  auto added = co_await graph.co_add_internal(std::move(options));
  if (!added)
    co_return Error{added.error().code, "Could not create node: " + added.error().message};
  filter_ = *added;
  cbw_ = static_cast<CopyBeforeWriteDriver*>(&filter_->driver());
  auto r = init_pending();
  if (r) {
    GraphChange change(graph);
    std::vector<Node*> drained = {params_.source};
    co_await change.co_drain(std::move(drained));
    r = change.replace(*params_.source, *filter_);
    if (r) r = change.commit();
    co_await change.co_finish();
  }
  if (!r) {
    Node* filter = filter_;
    filter_ = nullptr;
    cbw_ = nullptr;
    co_await graph.co_release_if_unused(filter);
  }
  co_return r;
}

// What the filter keeps (before it has users): the sync bitmap's clusters,
// or all of them; and how copies are made.
Result<void> BackupJob::init_pending() {
  uint64_t cluster = cbw_->copy_cluster();
  if (params_.perf.max_chunk && static_cast<uint64_t>(params_.perf.max_chunk) < cluster) {
    return Error{EINVAL, "Required max-chunk (" + std::to_string(params_.perf.max_chunk) +
                             ") is less than backup cluster size (" + std::to_string(cluster) +
                             ")"};
  }
  if (params_.sync == BackupSync::kBitmap) {
    HBitmap& pending = cbw_->pending();
    pending.reset_all();
    const DirtyBitmap& frozen = *params_.bitmap;
    pending.merge(frozen.bits());
  }
  uint64_t chunk = params_.perf.max_chunk ? params_.perf.max_chunk : kDefaultChunk;
  chunk = std::max(chunk / cluster * cluster, cluster);
  bool top = params_.sync == BackupSync::kTop;
  cbw_->set_copy_options(BlockCopierOptions{.base = top ? next_layer(*params_.source) : nullptr,
                                            .skip_unallocated = top,
                                            .compress = params_.compress,
                                            .max_chunk = chunk});
  return {};
}

// The job holds the filter (its main node) and the target, taking nothing
// and sharing everything: the filter's own edges do the I/O (QEMU's
// backup_job_create).
Result<void> BackupJob::hold_nodes() {
  STRATA_TRY(add_node(*filter_, "main node", 0, kPermAll));
  STRATA_TRY(add_node(*params_.target, "target", 0, kPermAll));
  STRATA_TRY(set_speed(params_.speed));
  set_error_policies(params_.on_source_error, params_.on_target_error);
  copier_ = std::make_unique<BlockCopier>(*cbw_->source(), *cbw_->target(), cbw_->copy_options(),
                                          nullptr);
  return {};
}

Task<Result<void>> BackupJob::co_run() {
  if (params_.sync == BackupSync::kTop) STRATA_CO_TRY(co_await co_skip_unallocated());
  sync_progress();
  if (params_.sync == BackupSync::kNone) {
    while (!is_cancelled()) {
      co_await co_yield_job();
      co_await co_pause_point();
    }
    co_return Result<void>{};
  }
  if (is_cancelled()) co_return Result<void>{};
  co_return co_await co_copy_all();
}

// sync top: clusters the source does not allocate itself are not copied
// (the target's backing file has them); a guest write to one meanwhile
// finds nothing to copy there either.
Task<Result<void>> BackupJob::co_skip_unallocated() {
  Node* base = next_layer(*params_.source);
  uint64_t size = params_.source->size();
  for (uint64_t off = 0; off < size;) {
    co_await co_pause_point();
    if (is_cancelled()) co_return Result<void>{};
    auto a = co_await co_is_allocated_above(*params_.source, base, false, off, size - off);
    if (!a) co_return std::move(a).error();
    if (!a->allocated) cbw_->pending().reset(off, a->bytes);
    off += a->bytes;
  }
  co_return Result<void>{};
}

// The pending clusters as they are now, on the copy engine; clusters the
// filter copies meanwhile are skipped by their chunks. Then the target is
// flushed.
Task<Result<void>> BackupJob::co_copy_all() {
  HBitmap work = cbw_->pending();
  Listener listener(*this);
  CopyEngine copy(engine().loop(), *this, listener,
                  CopyConfig{.max_chunk = cbw_->copy_options().max_chunk,
                             .max_workers = static_cast<unsigned>(params_.perf.max_workers)});
  listener.set_engine(&copy);
  auto r = co_await copy.co_run(work);
  sync_progress();
  if (!r && r.error().code == ECANCELED) co_return Result<void>{};
  STRATA_CO_TRY(std::move(r));
  co_return co_await cbw_->target()->co_flush();
}

// Guest writes waiting for their copies go first: no new chunk starts
// while there are any (a cancel or pause cuts the wait short).
Task<void> BackupJob::co_yield_to_guest() {
  while (cbw_->guest_waiters() > 0 && !is_cancelled()) {
    co_await co_sleep_ns(kGuestPollNs);
  }
}

uint64_t BackupJob::chunk_for_speed() const {
  uint64_t chunk = cbw_->copy_options().max_chunk;
  uint64_t cluster = cbw_->copy_cluster();
  if (speed() == 0 || speed() >= chunk) return chunk;
  return std::max(speed() / cluster * cluster, cluster);
}

// offset: what the filter copied; len: that plus what is still pending.
void BackupJob::sync_progress() {
  if (!cbw_) return;
  uint64_t copied = cbw_->copied_bytes();
  progress_update(copied - reported_);
  reported_ = copied;
  progress_set_remaining(cbw_->pending_bytes());
}

Task<ChunkOutcome> BackupJob::co_copy(uint64_t offset, uint64_t bytes) {
  note_rate(bytes);
  co_return co_await cbw_->co_copy_range(offset, bytes, *copier_);
}

Task<void> BackupJob::co_commit() {
  settle_bitmap(true);
  co_return;
}

Task<void> BackupJob::co_abort() {
  settle_bitmap(false);
  co_return;
}

Task<void> BackupJob::co_clean() {
  co_await co_remove_filter();
}

void BackupJob::settle_bitmap(bool success) {
  if (!bitmap_frozen_) return;
  bitmap_frozen_ = false;
  const HBitmap* not_copied = cbw_ ? &cbw_->pending() : nullptr;
  finish_sync_bitmap(*params_.bitmap, params_.bitmap_mode, success, not_copied);
}

// The source's users go back to it, the job lets go of the target and the
// filter, and the filter goes with the job's last edge (QEMU's
// backup_clean); a filter the job never held goes at once.
Task<void> BackupJob::co_remove_filter() {
  if (!filter_) co_return;
  Graph& graph = engine().graph();
  Node* filter = filter_;
  filter_ = nullptr;
  cbw_->stop();
  cbw_ = nullptr;
  auto r = co_await graph.co_replace_node(*filter, *filter->file()->node());
  if (!r) engine().logger().error("backup: removing the filter failed: " + r.error().message);
  if (nodes().empty()) {
    co_await graph.co_release_if_unused(filter);
    co_return;
  }
  std::vector<NodeUse> uses = nodes();
  for (auto it = uses.rbegin(); it != uses.rend(); ++it) co_await co_remove_node(it->edge);
}

}  // namespace strata
