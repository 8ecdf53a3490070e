// MirrorJob: set-up and the run loop. The exit (pivot) is in
// mirror_exit.cc, the write-blocking path in mirror_active.cc.
#include "jobs/mirror.h"

#include <algorithm>
#include <bit>

#include "block/bitmap/dirty_bitmap.h"
#include "block/core/block_status.h"
#include "block/core/graph_change.h"
#include "block/core/reopen.h"
#include "jobs/job_registry.h"
#include "strata/engine.h"

namespace strata {

namespace {
constexpr uint64_t kDefaultBufSize = 16 << 20;  // as QEMU's DEFAULT_MIRROR_BUF_SIZE
constexpr uint64_t kMaxChunk = 1 << 20;
constexpr unsigned kMaxWorkers = 16;
constexpr uint64_t kSliceNs = 100'000'000;  // how often a ready job looks for new work
}  // namespace

// The copy engine's listener, which also stops the copy when a
// write-blocking guest write met a fatal target error.
class MirrorJob::Listener final : public JobCopyListener {
 public:
  explicit Listener(MirrorJob& job) : JobCopyListener(job), job_(job) {}
  Task<bool> co_before_chunk() override {
    bool go_on = co_await JobCopyListener::co_before_chunk();
    co_return go_on && !job_.pending_error_ && !job_.wants_write_blocking();
  }
  // As QEMU's mirror: what is left is re-read as the guest dirties, so the
  // offset never passes the length.
  void on_progress(uint64_t bytes) override {
    JobCopyListener::on_progress(bytes);
    job_.update_remaining();
  }

 private:
  MirrorJob& job_;
};

MirrorJob::MirrorJob(Engine& engine, MirrorParams params)
    : BlockJob(engine, params.job), params_(std::move(params)) {}

MirrorJob::~MirrorJob() = default;

Task<Result<std::shared_ptr<MirrorJob>>> MirrorJob::co_start(Engine& engine, MirrorParams params) {
  if (params.source == params.target) co_return Error{EINVAL, "Can't mirror node into itself"};
  auto job = std::make_shared<MirrorJob>(engine, std::move(params));
  STRATA_CO_TRY(co_await job->co_insert_filter());
  auto added = engine.jobs().add(job);
  if (!added) {
    co_await job->co_remove_filter();
    co_return std::move(added).error();
  }
  auto set_up = co_await job->co_setup();
  if (!set_up) {
    co_await job->co_exit(true);
    co_await job->co_early_fail();
    co_return std::move(set_up).error();
  }
  job->start();
  co_return job;
}

// The filter goes above the source: every parent of the source moves to it.
Task<Result<void>> MirrorJob::co_insert_filter() {
  Graph& graph = engine().graph();
  nlohmann::json options = {{"driver", kMirrorTopDriver}, {"file", params_.source->name()}};
  if (!params_.filter_node_name.empty()) options["node-name"] = params_.filter_node_name;
  STRATA_CO_TRY_ASSIGN(filter_, co_await graph.co_add_internal(std::move(options)));
  filter_driver_ = static_cast<MirrorTopDriver*>(&filter_->driver());
  filter_driver_->set_commit(params_.commit);
  GraphChange change(graph);
  std::vector<Node*> drained = {params_.source};
  co_await change.co_drain(std::move(drained));
  auto r = change.replace(*params_.source, *filter_);
  if (r) r = change.commit();
  co_await change.co_finish();
  if (!r) {
    filter_driver_->stop();
    co_await graph.co_release_if_unused(filter_);
    filter_ = nullptr;
  }
  co_return r;
}

Result<void> MirrorJob::hold_nodes() {
  uint64_t target_perm = kPermWrite;
  uint64_t target_shared = kPermWriteUnchanged;
  if (params_.commit) {
    if (params_.target->size() < params_.source->size()) target_perm |= kPermResize;
    target_shared |= kPermConsistentRead | kPermWrite;
  }
  STRATA_TRY(add_node(*filter_, "main node", kPermConsistentRead,
                      kPermConsistentRead | kPermWriteUnchanged | kPermWrite));
  STRATA_TRY_ASSIGN(target_edge_,
                    add_backend_node(*params_.target, "target", target_perm, target_shared));
  STRATA_TRY(add_node(*params_.source, "source", 0,
                      kPermWriteUnchanged | kPermWrite | kPermConsistentRead));
  if (!params_.commit) return {};
  for (Node* n = next_layer(*params_.source); n && n != params_.target; n = next_layer(*n)) {
    STRATA_TRY(add_node(*n, "intermediate node", 0, kPermWriteUnchanged | kPermWrite));
  }
  STRATA_TRY(engine().graph().freeze_chain(*filter_, params_.target));
  chain_frozen_ = true;
  return {};
}

Task<Result<void>> MirrorJob::co_setup() {
  if (params_.commit && params_.target->read_only()) {
    STRATA_CO_TRY(co_await co_set_read_only(engine().graph(), *params_.target, false));
    base_was_read_only_ = true;
  }
  STRATA_CO_TRY(hold_nodes());
  STRATA_CO_TRY(set_speed(params_.speed));
  set_error_policies(params_.on_source_error, params_.on_target_error);
  uint64_t gran = params_.granularity;
  if (gran == 0) gran = default_bitmap_granularity(*params_.target);
  STRATA_CO_TRY_ASSIGN(dirty_, params_.source->bitmaps().create(gran, ""));
  uint64_t buf = params_.buf_size ? params_.buf_size : kDefaultBufSize;
  uint64_t chunk = std::max(std::min(kMaxChunk, buf) / gran * gran, gran);
  unsigned workers = static_cast<unsigned>(std::clamp<uint64_t>(buf / chunk, 1, kMaxWorkers));
  if (params_.target_is_zero) {
    target_zeroes_ = std::make_unique<ZeroMap>(params_.target->size(), std::countr_zero(gran));
  }
  BlockCopierOptions copy{.base = params_.base,
                          .skip_unallocated = params_.base != nullptr,
                          .unmap = params_.unmap,
                          .target_zeroes = target_zeroes_.get(),
                          .max_chunk = chunk};
  copier_ = std::make_unique<BlockCopier>(
      *filter_->file(), *target_edge_, copy,
      [this](uint64_t bytes) -> Task<void> { co_await co_throttle(bytes); });
  listener_ = std::make_unique<Listener>(*this);
  engine_ = std::make_unique<CopyEngine>(engine().loop(), *copier_, *listener_,
                                         CopyConfig{.max_chunk = chunk, .max_workers = workers});
  filter_driver_->set_sink(this);
  if (params_.write_blocking) enter_write_blocking();
  co_return Result<void>{};
}

Task<Result<void>> MirrorJob::co_check_sizes() {
  uint64_t size = params_.source->size();
  uint64_t target_size = params_.target->size();
  if (params_.commit) {
    if (target_size < size) {
      auto r = co_await target_edge_->co_truncate(size, false, Preallocation::kOff);
      if (!r) co_return r;
    }
  } else if (size != target_size) {
    co_return Error{EINVAL, "Source and target image have different sizes"};
  }
  co_return Result<void>{};
}

// What is to copy at first: everything (sync full), what is allocated above
// the base (sync top, commit), or nothing (sync none: only new writes).
Task<Result<void>> MirrorJob::co_init_dirty() {
  uint64_t size = params_.source->size();
  if (params_.sync == MirrorSync::kNone) co_return Result<void>{};
  if (params_.sync == MirrorSync::kFull && !params_.base) {
    dirty_->bits().set(0, size);
    co_return Result<void>{};
  }
  for (uint64_t off = 0; off < size;) {
    co_await co_pause_point();
    if (is_cancelled()) co_return Result<void>{};
    auto a = co_await co_is_allocated_above(*params_.source, params_.base, false, off, size - off);
    if (!a) co_return std::move(a).error();
    if (a->allocated) dirty_->bits().set(off, a->bytes);
    off += a->bytes;
  }
  co_return Result<void>{};
}

Task<Result<void>> MirrorJob::co_flush_target() {
  auto r = co_await target_edge_->co_flush();
  if (r) co_return r;
  auto decision = co_await co_handle_error(r.error(), false);
  if (decision == ErrorDecision::kFail) co_return r;
  co_return Error{EAGAIN, "flush to be retried"};
}

void MirrorJob::update_remaining() {
  if (!dirty_) return;
  progress_set_remaining(dirty_->count() + engine_->bytes_in_flight() + active_bytes_in_flight_);
}

// One pass of the copy engine over the dirty bitmap.
Task<Result<void>> MirrorJob::co_copy_pass() {
  update_remaining();
  auto r = co_await engine_->co_run(*dirty_);
  if (pending_error_) co_return *pending_error_;
  if (!r && r.error().code == ECANCELED) co_return Result<void>{};
  co_return r;
}

Task<Result<void>> MirrorJob::co_run() {
  STRATA_CO_TRY(co_await co_check_sizes());
  STRATA_CO_TRY(co_await co_init_dirty());
  for (;;) {
    STRATA_CO_TRY(co_await co_copy_pass());
    if (is_cancelled()) co_return Result<void>{};
    if (wants_write_blocking()) co_await co_switch_to_write_blocking();
    if (dirty_->count() != 0) continue;
    if (write_blocking_) actively_synced_ = true;
    if (!is_ready()) {
      auto flushed = co_await co_flush_target();
      if (!flushed && flushed.error().code == EAGAIN) continue;
      STRATA_CO_TRY(std::move(flushed));
      transition_to_ready();
      if (params_.write_blocking || params_.commit) co_await co_switch_to_write_blocking();
    }
    if (should_complete_ || cancel_requested()) {
      bool done = co_await co_try_finish();
      if (pending_error_) co_return *pending_error_;
      if (done) co_return Result<void>{};
      continue;
    }
    co_await co_sleep_ns(dirty_->count() ? 0 : kSliceNs);
  }
}

// An active commit goes write-blocking once its first sweep over the
// source is done: from then on the guest's writes cannot dirty faster than
// the copy cleans, so it reaches ready under any write load.
bool MirrorJob::wants_write_blocking() const {
  if (write_blocking_) return false;
  return switch_requested_ || (params_.commit && engine_ && engine_->sweeps() > 0);
}

// block-job-change (QEMU's mirror_change): background to write-blocking
// only. The switch needs the filter drained, so the job makes it at its
// next step; the mode reads as changed at once.
Result<void> MirrorJob::on_change(const BlockJobChange& change) {
  if (params_.commit) return BlockJob::on_change(change);
  bool want = change.write_blocking.value_or(false);
  if (want == (write_blocking_ || switch_requested_)) return {};
  if (!want) return Error{ENOTSUP, "Change to copy mode 'background' is not implemented"};
  switch_requested_ = true;
  enter();
  return {};
}

std::optional<bool> MirrorJob::actively_synced_info() const {
  if (params_.commit) return std::nullopt;  // a commit job has no such member
  return actively_synced_;
}

// From background to write-blocking: with the filter drained, no guest
// write is half way through the background path when the switch happens.
Task<void> MirrorJob::co_switch_to_write_blocking() {
  if (write_blocking_) {
    actively_synced_ = true;
    co_return;
  }
  in_own_drain_ = true;
  std::vector<Node*> drained = {filter_};
  auto section = co_await engine().graph().co_drain(std::move(drained));
  enter_write_blocking();
  actively_synced_ = dirty_->count() == 0;
  section.reset();
  in_own_drain_ = false;
}

// From now on the filter sends guest writes to the target too and tells the
// job of those that did not get there. The bitmap no longer records writes
// through the filter, whose marks would make granules the filter just
// brought in sync look owed (and one write take another's mark for its
// own); writes that reach the source by any other way still mark it.
void MirrorJob::enter_write_blocking() {
  dirty_->set_unrecorded_writer(filter_->file());
  write_blocking_ = true;
}

// The last step before the exit: drain the source (guest writes wait), copy
// what is left, flush. True when done (the drain is kept for the exit).
Task<bool> MirrorJob::co_try_finish() {
  in_own_drain_ = true;
  std::vector<Node*> drained = {params_.source};
  own_drain_ = co_await engine().graph().co_drain(std::move(drained));
  if (dirty_->count() == 0) {
    auto flushed = co_await co_flush_target();
    if (flushed) co_return true;
  }
  own_drain_.reset();
  in_own_drain_ = false;
  co_return false;
}

Result<void> MirrorJob::on_complete() {
  if (!params_.replaces.empty() && !engine().graph().find(params_.replaces)) {
    return Error{ENOENT, "Node name '" + params_.replaces + "' not found"};
  }
  should_complete_ = true;
  enter();
  return {};
}

// Before the job is ready any cancel is a forced one (QEMU's
// mirror_cancel); a soft cancel while ready finishes without the pivot.
bool MirrorJob::on_cancel(bool force) {
  return force || !is_ready();
}

void MirrorJob::on_interrupt() {
  enter();
}

bool MirrorJob::drained_busy() const {
  if (in_own_drain_) return false;
  return BlockJob::drained_busy();
}

void MirrorJob::on_io_error(bool is_read) {
  actively_synced_ = false;
}

}  // namespace strata
