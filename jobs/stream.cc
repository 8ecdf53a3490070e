#include "jobs/stream.h"

#include "base/log.h"
#include "block/core/block_status.h"
#include "block/core/graph_change.h"
#include "block/core/image_ops.h"
#include "block/core/reopen.h"
#include "block/filters/copy_on_read.h"
#include "jobs/job_registry.h"
#include "strata/engine.h"

namespace strata {

namespace {

// QEMU's STREAM_CHUNK: several clusters per copy-on-read request, several
// requests in flight; the work map's granularity is a usual cluster.
constexpr uint64_t kChunk = 512 << 10;
constexpr unsigned kWorkers = 8;
constexpr uint64_t kGranularity = 64 << 10;
constexpr uint64_t kBasic = kPermConsistentRead | kPermWriteUnchanged;

// The node below filters (QEMU's bdrv_skip_filters).
Node* skip_filters(Node* n) {
  while (n && n->filtered() && !n->backing()) n = n->filtered()->node();
  return n;
}

// QEMU's bdrv_filter_or_cow_bs.
Node* chain_next(const Node& n) {
  Child* c = Graph::chain_child(n);
  return c ? c->node() : nullptr;
}

}  // namespace

StreamJob::StreamJob(Engine& engine, StreamParams params)
    : BlockJob(engine, params.job), params_(std::move(params)) {}

StreamJob::~StreamJob() = default;

Task<Result<std::shared_ptr<StreamJob>>> StreamJob::co_start(Engine& engine, StreamParams params) {
  auto job = std::make_shared<StreamJob>(engine, std::move(params));
  STRATA_CO_TRY(job->find_layers());
  STRATA_CO_TRY(engine.jobs().add(job));
  auto set_up = co_await job->co_setup();
  if (!set_up) {
    co_await job->co_clean();
    co_await job->co_early_fail();
    co_return std::move(set_up).error();
  }
  job->start();
  co_return job;
}

// QEMU's base_overlay (the lowest layer copied from) and above_base (the
// node whose chain link reaches the base: base_overlay or a filter below it).
Result<void> StreamJob::find_layers() {
  if (params_.bottom) {
    base_overlay_ = above_base_ = params_.bottom;
    return {};
  }
  Node* base = skip_filters(params_.base);
  for (Node* n = skip_filters(params_.bs); n && !base_overlay_; n = next_layer(*n)) {
    if (skip_filters(next_layer(*n)) == base) base_overlay_ = n;
  }
  if (!base_overlay_) {
    return Error{EINVAL, "'" + params_.base->name() + "' is not in the backing chain of '" +
                             params_.bs->name() + "'"};
  }
  above_base_ = base_overlay_;
  Node* cow = base_overlay_->backing() ? base_overlay_->backing()->node() : nullptr;
  if (cow != params_.base) {
    above_base_ = cow;
    while (above_base_ && chain_next(*above_base_) != params_.base) {
      above_base_ = chain_next(*above_base_);
    }
  }
  if (!above_base_) return Error{EINVAL, "The base is not below a layer of the chain"};
  return {};
}

// A read-only bs is reopened read-write, its chain held meanwhile.
Task<Result<void>> StreamJob::co_make_writable() {
  if (!params_.bs->read_only()) co_return Result<void>{};
  Graph& graph = engine().graph();
  STRATA_CO_TRY(graph.freeze_chain(*params_.bs, above_base_));
  auto r = co_await co_set_read_only(graph, *params_.bs, false);
  graph.unfreeze_chain(*params_.bs, above_base_);
  if (r) bs_was_read_only_ = true;
  co_return r;
}

Task<Result<void>> StreamJob::co_insert_filter() {
  CopyOnReadOptions options{.node_name = params_.filter_node_name, .bottom = base_overlay_->name()};
  STRATA_CO_TRY_ASSIGN(filter_,
                       co_await co_insert_copy_on_read(engine().graph(), *params_.bs, options));
  co_return Result<void>{};
}

// QEMU's stream_start: the filter is the job's node (it reads through it),
// bs may be written by the guest, the layers that will drop out of the
// chain may not be written or resized by anyone.
Result<void> StreamJob::hold_nodes() {
  STRATA_TRY_ASSIGN(read_edge_,
                    add_node(*filter_, "main node", kPermConsistentRead, kBasic | kPermWrite));
  STRATA_TRY(add_node(*params_.bs, "active node", 0, kBasic | kPermWrite));
  Node* base = chain_next(*above_base_);
  for (Node* n = chain_next(*params_.bs); n && n != base; n = chain_next(*n)) {
    STRATA_TRY(add_node(*n, "intermediate node", 0, kBasic));
  }
  // As QEMU's copy-on-read filter with a bottom node: the chain from the
  // filter down to bottom cannot change under the job.
  STRATA_TRY(engine().graph().freeze_chain(*filter_, base_overlay_));
  chain_frozen_ = true;
  return {};
}

Task<Result<void>> StreamJob::co_setup() {
  STRATA_CO_TRY(co_await co_make_writable());
  STRATA_CO_TRY(co_await co_insert_filter());
  STRATA_CO_TRY(hold_nodes());
  STRATA_CO_TRY(set_speed(params_.speed));
  set_error_policies(params_.on_error, params_.on_error);
  co_return Result<void>{};
}

// QEMU's stream_run step: a range bs allocates is skipped; otherwise the
// range is copied when a layer from bs's backing file down to
// base_overlay (included) allocates it. Past the end of the backing file
// nothing is left to copy.
Task<Result<uint64_t>> StreamJob::co_next_range(uint64_t offset, uint64_t len, bool* copy) {
  *copy = false;
  Node* top = skip_filters(params_.bs);
  uint64_t max = len - offset;
  STRATA_CO_TRY_ASSIGN(BlockStatus st, co_await top->co_block_status(offset, max, nullptr));
  uint64_t n = st.bytes ? std::min(st.bytes, max) : max;
  if (st.flags & kStatusAllocated) co_return n;
  Node* below = top->backing() ? top->backing()->node() : nullptr;
  if (!below || offset >= below->size()) co_return len - offset;
  STRATA_CO_TRY_ASSIGN(Allocation a,
                       co_await co_is_allocated_above(*below, base_overlay_, true, offset, n));
  *copy = a.allocated;
  co_return std::min(n, a.bytes);
}

// What is to copy, before any copy starts. A range whose status cannot be
// had is marked: the read through the filter meets the error, if it
// persists, and the error policy applies there. A guest write into a
// marked range later only makes its copy a plain read.
Task<Result<void>> StreamJob::co_find_work(HBitmap& work) {
  uint64_t len = work.size();
  for (uint64_t offset = 0, n = 0; offset < len; offset += n) {
    co_await co_pause_point();
    if (is_cancelled()) break;
    bool copy = false;
    auto range = co_await co_next_range(offset, len, &copy);
    n = range ? *range : std::min(kChunk, len - offset);
    if (!range || copy) work.set(offset, n);
  }
  co_return Result<void>{};
}

// A chunk: read through the filter, which writes what it does not find in
// bs there. An error the policy ignores drops the chunk and fails the job
// at the end (as QEMU: the layers must not drop out of the chain with data
// left behind); stop parks the copy until the job is resumed.
Task<ChunkOutcome> StreamJob::co_copy(uint64_t offset, uint64_t bytes) {
  co_await co_throttle(bytes);
  if (is_cancelled()) co_return ChunkOutcome{};
  AlignedBuffer buffer = take_buffer();
  IoVec iov(buffer.data(), bytes);
  ChunkOutcome out;
  out.result = co_await read_edge_->co_preadv(offset, iov, 0);
  out.read_failed = true;  // the filter's write-back counts as the read's
  buffers_.push_back(std::move(buffer));
  co_return out;
}

AlignedBuffer StreamJob::take_buffer() {
  if (buffers_.empty()) return AlignedBuffer(kChunk);
  AlignedBuffer buffer = std::move(buffers_.back());
  buffers_.pop_back();
  return buffer;
}

Task<ChunkErrorStep> StreamJob::Listener::co_on_error(Error error, bool read_failed) {
  ErrorAction action = job_.note_error(error, read_failed);
  if (action == ErrorAction::kStop) co_return ChunkErrorStep::kRetry;
  if (action == ErrorAction::kReport) co_return ChunkErrorStep::kStop;
  if (!job_.ignored_error_) job_.ignored_error_ = error;
  co_return ChunkErrorStep::kSkip;
}

Task<Result<void>> StreamJob::co_run() {
  if (skip_filters(params_.bs) == base_overlay_) co_return Result<void>{};  // nothing to stream
  uint64_t len = params_.bs->size();
  progress_set_remaining(len);
  HBitmap work(len, __builtin_ctzll(kGranularity));
  STRATA_CO_TRY(co_await co_find_work(work));
  if (is_cancelled()) co_return Result<void>{};
  uint64_t marked = 0;
  work.for_each_dirty_extent([&marked](const BitmapExtent& e) { marked += e.length; });
  progress_update(len - marked);
  Listener listener(*this);
  CopyEngine copy(engine().loop(), *this, listener,
                  CopyConfig{.max_chunk = kChunk, .max_workers = kWorkers});
  auto r = co_await copy.co_run(work);
  if (!r && r.error().code == ECANCELED) co_return Result<void>{};
  // The first error, as QEMU's stream_run.
  if (ignored_error_) co_return *ignored_error_;
  co_return r;
}

// The header of bs names the new backing file first (every range is in bs
// by now, so either chain reads the same), then the graph follows.
Task<Result<void>> StreamJob::co_relink() {
  Graph& graph = engine().graph();
  Node* top = skip_filters(params_.bs);
  if (!top->backing()) co_return Result<void>{};
  Node* base = chain_next(*above_base_);
  Node* unfiltered_base = skip_filters(base);
  std::string file, format;
  if (unfiltered_base) {
    file =
        params_.backing_file.empty() ? unfiltered_base->driver().filename() : params_.backing_file;
    format = unfiltered_base->driver_name();
    const DriverSpec* spec = graph.drivers().find(format);
    if (params_.backing_mask_protocol && spec && spec->kind == DriverKind::kProtocol) {
      format = "raw";
    }
  }
  GraphChange change(graph);
  std::vector<Node*> drained = {top};
  co_await change.co_drain(std::move(drained), DrainScope::kSubtree);
  Result<void> r;
  if (ImageOps* ops = top->driver().image_ops()) {
    r = co_await ops->co_change_backing_file(file, format);
  }
  if (r) r = base ? change.retarget(*top->backing(), *base) : change.detach(*top->backing());
  if (r) r = change.commit();
  co_await change.co_finish();
  co_return r;
}

Task<Result<void>> StreamJob::co_prepare() {
  co_await co_drop_filter();
  co_return co_await co_relink();
}

Task<void> StreamJob::co_drop_filter() {
  if (!filter_) co_return;
  Graph& graph = engine().graph();
  if (chain_frozen_) graph.unfreeze_chain(*filter_, base_overlay_);
  chain_frozen_ = false;
  // The filter's users go back to bs first; the job's own edge (which
  // stays at the filter) goes last and takes the filter with it.
  Node* filter = filter_;
  filter_ = nullptr;
  auto r = co_await co_drop_copy_on_read(graph, *filter);
  if (!r) engine().logger().error("stream: removing the filter failed: " + r.error().message);
  if (read_edge_) co_await co_remove_node(read_edge_);
  read_edge_ = nullptr;
}

Task<void> StreamJob::co_clean() {
  co_await co_drop_filter();
  if (bs_was_read_only_) {
    (void)co_await co_set_read_only(engine().graph(), *params_.bs, true);
    bs_was_read_only_ = false;
  }
}

}  // namespace strata
