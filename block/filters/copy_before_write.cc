#include "block/filters/copy_before_write.h"

#include <algorithm>
#include <bit>

#include "base/timer.h"
#include "block/bitmap/bitmap_ops.h"
#include "block/bitmap/dirty_bitmap.h"
#include "block/core/block_status.h"
#include "block/core/graph.h"

namespace strata {

namespace {

constexpr uint64_t kMinCopyCluster = 64 * 1024;
constexpr uint64_t kMaxMinCluster = 64ull << 20;
constexpr uint64_t kNsPerSecond = 1'000'000'000;

uint64_t round_down(uint64_t v, uint64_t a) {
  return v / a * a;
}

uint64_t round_up(uint64_t v, uint64_t a) {
  return (v + a - 1) / a * a;
}

Error view_error() {
  return Error{EACCES, "Permission denied"};
}

}  // namespace

// A guest write's copy that may outlive the write (cbw-timeout).
struct CopyBeforeWriteDriver::Call {
  explicit Call(Loop& loop) : wake(loop) {}
  CoEvent wake;
  std::optional<ChunkOutcome> out;
};

CopyBeforeWriteDriver::CopyBeforeWriteDriver() = default;
CopyBeforeWriteDriver::~CopyBeforeWriteDriver() = default;

Result<void> CopyBeforeWriteDriver::parse_options(OpenContext& ctx) {
  const auto& o = ctx.options();
  std::string mode = o.value("on-cbw-error", "break-guest-write");
  if (mode == "break-snapshot") {
    on_error_ = OnCbwError::kBreakSnapshot;
  } else if (mode != "break-guest-write") {
    return Error{EINVAL, "Parameter 'on-cbw-error' does not accept value '" + mode + "'"};
  }
  uint64_t timeout = o.value("cbw-timeout", uint64_t{0});
  if (timeout > UINT32_MAX) {
    return Error{EINVAL, "Parameter 'cbw-timeout' expects uint32_t"};
  }
  timeout_ns_ = timeout * kNsPerSecond;
  min_cluster_ = o.value("min-cluster-size", uint64_t{0});
  if (min_cluster_ & (min_cluster_ - 1)) {
    return Error{EINVAL, "min-cluster-size needs to be a power of 2"};
  }
  if (min_cluster_ > kMaxMinCluster) {
    return Error{EINVAL, "min-cluster-size too large: " + std::to_string(min_cluster_) + " > " +
                             std::to_string(kMaxMinCluster)};
  }
  discard_source_ = o.value("x-discard-source", false);
  return {};
}

// The view: every cluster, or those the `bitmap` option marks now.
Result<void> CopyBeforeWriteDriver::init_bitmaps(OpenContext& ctx) {
  uint64_t size = file_->node()->size();
  if (target_->node()->size() < size) {
    return Error{EINVAL,
                 "Target node '" + target_->node()->name() + "' is smaller than its source"};
  }
  cluster_ = std::max({kMinCopyCluster, target_->node()->driver().cluster_size(), min_cluster_});
  uint32_t bits = std::countr_zero(cluster_);
  pending_.emplace(size, bits);
  done_.emplace(size, bits);
  access_.emplace(size, bits);
  const auto& o = ctx.options();
  if (!o.contains("bitmap")) {
    pending_->set_all();
  } else {
    const auto& b = o["bitmap"];
    if (!b.is_object() || !b.contains("node") || !b.contains("name")) {
      return Error{EINVAL, "Parameter 'bitmap' expects {node, name}"};
    }
    STRATA_TRY_ASSIGN(DirtyBitmap * bitmap, lookup_bitmap(ctx.graph(), b["node"].get<std::string>(),
                                                          b["name"].get<std::string>()));
    bitmap->bits().for_each_dirty_extent(
        [this](const BitmapExtent& e) { pending_->set(e.offset, e.length); });
  }
  access_->merge(*pending_);
  return {};
}

Task<Result<void>> CopyBeforeWriteDriver::co_open(OpenContext& ctx) {
  STRATA_CO_TRY(parse_options(ctx));
  STRATA_CO_TRY(co_await FilterDriver::co_open(ctx));
  STRATA_CO_TRY_ASSIGN(target_, co_await ctx.co_open_child("target", kRoleData, true));
  STRATA_CO_TRY(init_bitmaps(ctx));
  lock_ = std::make_unique<RangeLock>(ctx.loop());
  idle_ = std::make_unique<CoQueue>(ctx.loop());
  set_copy_options(BlockCopierOptions{});
  co_return Result<void>{};
}

// Copies that timed out finish before the node goes.
Task<void> CopyBeforeWriteDriver::co_close() {
  while (background_ > 0) co_await idle_->wait();
}

// The bitmap's count, less the part of a last, short cluster past the end.
uint64_t CopyBeforeWriteDriver::pending_bytes() const {
  uint64_t size = pending_->size();
  uint64_t bytes = pending_->count_bytes();
  if (size % cluster_ && pending_->get(size - 1)) bytes -= cluster_ - size % cluster_;
  return bytes;
}

void CopyBeforeWriteDriver::set_copy_options(BlockCopierOptions options) {
  options_ = options;
  options_.serialising = true;
  copier_ = std::make_unique<BlockCopier>(*file_, *target_, options_, nullptr);
}

Task<ChunkOutcome> CopyBeforeWriteDriver::co_copy_range(uint64_t offset, uint64_t bytes,
                                                        BlockCopier& copier) {
  RangeLock::Entry held(*lock_, offset, bytes, true);
  if (held.must_wait()) co_await held.co_wait();
  if (broken_) co_return ChunkOutcome{view_error(), true};
  uint64_t end = offset + bytes;
  for (auto e = pending_->next_dirty_extent(offset, end); e;
       e = pending_->next_dirty_extent(e->offset + e->length, end)) {
    ChunkOutcome out = co_await copier.co_copy(e->offset, e->length);
    uint64_t copied = out.result ? e->length : round_down(out.done_bytes, cluster_);
    co_await co_mark_copied(e->offset, copied);
    if (!out.result) co_return out;
  }
  co_return ChunkOutcome{};
}

// Clusters whose old data is now in the target.
Task<void> CopyBeforeWriteDriver::co_mark_copied(uint64_t offset, uint64_t bytes) {
  if (bytes == 0) co_return;
  pending_->reset(offset, bytes);
  done_->set(offset, bytes);
  copied_bytes_ += bytes;
  if (discard_source_) (void)co_await file_->co_pdiscard(offset, bytes);
}

// Before a guest write: the old data of the clusters it touches that are
// still pending goes to the target. A failure fails the write
// (break-guest-write) or breaks the view and lets it through.
Task<Result<void>> CopyBeforeWriteDriver::co_before_write(uint64_t offset, uint64_t bytes) {
  if (broken_ || stopped_ || bytes == 0) co_return Result<void>{};
  uint64_t start = round_down(offset, cluster_);
  uint64_t end = std::min(round_up(offset + bytes, cluster_), pending_->size());
  if (!pending_->next_dirty(start, end)) co_return Result<void>{};
  // Two statements: GCC 12 destroys the result of a conditional
  // expression with a co_await in each arm twice.
  ChunkOutcome out;
  guest_waiters_++;
  if (timeout_ns_) {
    out = co_await co_copy_in_time(start, end - start);
  } else {
    out = co_await co_copy_range(start, end - start, *copier_);
  }
  guest_waiters_--;
  if (out.result) co_return Result<void>{};
  if (on_error_ == OnCbwError::kBreakGuestWrite) co_return out.result;
  broken_ = true;
  co_return Result<void>{};
}

// cbw-timeout: the copy runs on its own; the write waits for it at most
// that long.
Task<ChunkOutcome> CopyBeforeWriteDriver::co_copy_in_time(uint64_t offset, uint64_t bytes) {
  Loop& loop = node().loop();
  auto call = std::make_shared<Call>(loop);
  background_++;
  loop.spawn(co_background_copy(call, offset, bytes));
  if (!call->out) {
    Timer timer(loop);
    timer.start(timeout_ns_, [call] { call->wake.set(); });
    co_await call->wake.co_wait();
  }
  if (call->out) co_return std::move(*call->out);
  co_return ChunkOutcome{Error{ETIMEDOUT, "Connection timed out"}, false};
}

Task<void> CopyBeforeWriteDriver::co_background_copy(std::shared_ptr<Call> call, uint64_t offset,
                                                     uint64_t bytes) {
  call->out = co_await co_copy_range(offset, bytes, *copier_);
  call->wake.set();
  if (--background_ == 0) idle_->wake_all();
}

Task<Result<void>> CopyBeforeWriteDriver::co_pwritev(uint64_t offset, const IoVec& iov,
                                                     uint32_t flags) {
  STRATA_CO_TRY(co_await co_before_write(offset, iov.size()));
  co_return co_await FilterDriver::co_pwritev(offset, iov, flags);
}

Task<Result<void>> CopyBeforeWriteDriver::co_pwrite_zeroes(uint64_t offset, uint64_t bytes,
                                                           uint32_t flags) {
  STRATA_CO_TRY(co_await co_before_write(offset, bytes));
  co_return co_await FilterDriver::co_pwrite_zeroes(offset, bytes, flags);
}

Task<Result<void>> CopyBeforeWriteDriver::co_pdiscard(uint64_t offset, uint64_t bytes) {
  STRATA_CO_TRY(co_await co_before_write(offset, bytes));
  co_return co_await FilterDriver::co_pdiscard(offset, bytes);
}

Result<std::pair<bool, uint64_t>> CopyBeforeWriteDriver::view_extent(uint64_t offset,
                                                                     uint64_t bytes,
                                                                     bool whole) const {
  uint64_t end = offset + bytes;
  if (broken_) return view_error();
  auto hole = access_->next_clean(offset, end);
  if (hole && (whole || *hole == offset)) return view_error();
  if (hole) end = *hole;
  bool done = done_->get(offset);
  auto change = done ? done_->next_clean(offset, end) : done_->next_dirty(offset, end);
  return std::make_pair(done, (change ? *change : end) - offset);
}

// A read of clusters not copied yet, from the source, with the range held
// against guest writes; `retry` when a copy finished meanwhile.
Task<Result<void>> CopyBeforeWriteDriver::co_read_source(uint64_t offset, const IoVec& iov,
                                                         bool* retry) {
  RangeLock::Entry held(*lock_, offset, iov.size(), false);
  if (held.must_wait()) co_await held.co_wait();
  if (broken_) co_return view_error();
  *retry = done_->next_dirty(offset, offset + iov.size()).has_value();
  if (*retry) co_return Result<void>{};
  co_return co_await file_->co_preadv(offset, iov);
}

Task<Result<void>> CopyBeforeWriteDriver::co_snapshot_preadv(uint64_t offset, const IoVec& iov) {
  for (uint64_t pos = 0; pos < iov.size();) {
    STRATA_CO_TRY_ASSIGN(auto extent, view_extent(offset + pos, iov.size() - pos, true));
    auto [done, len] = extent;
    IoVec part = iov.slice(pos, len);
    bool retry = false;
    if (done) {
      STRATA_CO_TRY(co_await target_->co_preadv(offset + pos, part));
    } else {
      STRATA_CO_TRY(co_await co_read_source(offset + pos, part, &retry));
    }
    if (!retry) pos += len;
  }
  co_return Result<void>{};
}

// What the view reads as: copied clusters as the target has them (always
// allocated), the others as the source's chain does.
Task<Result<BlockStatus>> CopyBeforeWriteDriver::co_snapshot_block_status(uint64_t offset,
                                                                          uint64_t bytes) {
  STRATA_CO_TRY_ASSIGN(auto extent, view_extent(offset, bytes, false));
  auto [done, len] = extent;
  Child* from = done ? target_ : file_;
  std::optional<RangeLock::Entry> held;
  if (!done) {
    held.emplace(*lock_, offset, len, false);
    if (held->must_wait()) co_await held->co_wait();
  }
  STRATA_CO_TRY_ASSIGN(ChainStatus st,
                       co_await co_block_status_above(*from->node(), nullptr, offset, len, from));
  BlockStatus out;
  out.flags = (st.flags & (kStatusData | kStatusZero)) | kStatusAllocated;
  out.bytes = std::min(st.bytes, len);
  out.depth = 1;
  co_return out;
}

// The whole clusters of the range leave the view: nothing copies them any
// more and the target gives their space back.
Task<Result<void>> CopyBeforeWriteDriver::co_snapshot_pdiscard(uint64_t offset, uint64_t bytes) {
  uint64_t start = round_up(offset, cluster_);
  uint64_t end =
      offset + bytes == access_->size() ? offset + bytes : round_down(offset + bytes, cluster_);
  if (end <= start) co_return Result<void>{};
  access_->reset(start, end - start);
  pending_->reset(start, end - start);
  co_return co_await target_->co_pdiscard(start, end - start);
}

void CopyBeforeWriteDriver::child_perm(const Child& child, uint64_t perm, uint64_t shared,
                                       uint64_t* nperm, uint64_t* nshared) const {
  if (&child == target_ || child.name() == "target") {
    *nperm = kPermWrite;
    *nshared = kPermAll & ~kPermResize;
    return;
  }
  if (stopped_) {
    *nperm = 0;
    *nshared = kPermAll;
    return;
  }
  filter_default_perms(perm, shared, nperm, nshared);
  if (discard_source_) *nperm |= kPermWrite;
  if (!node().parents().empty()) {
    *nperm |= kPermConsistentRead;
    *nshared &= ~(kPermWrite | kPermResize);
  }
}

void register_copy_before_write_filter(DriverRegistry& registry) {
  registry.add(DriverSpec{.name = kCopyBeforeWriteDriver,
                          .kind = DriverKind::kFilter,
                          .options = {{"file", OptType::kChild, true},
                                      {"target", OptType::kChild, true},
                                      {"bitmap", OptType::kObject, false},
                                      {"on-cbw-error", OptType::kString, false},
                                      {"cbw-timeout", OptType::kUint, false},
                                      {"min-cluster-size", OptType::kUint, false},
                                      {"x-discard-source", OptType::kBool, false}},
                          .create = [] { return std::make_unique<CopyBeforeWriteDriver>(); }});
}

}  // namespace strata
