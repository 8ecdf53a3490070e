#include "block/filters/mirror_top.h"

#include "block/core/graph.h"

namespace strata {

Task<Result<void>> MirrorTopDriver::co_write(MirrorMethod method, uint64_t offset, uint64_t bytes,
                                             const IoVec* iov, uint32_t flags) {
  MirrorSink* sink = nullptr;
  if (sink_ && sink_->copy_to_target()) sink = sink_;
  ActiveWrite write;
  if (sink) write = co_await sink->co_begin_active_write(offset, bytes);
  Result<void> r;
  switch (method) {
    case MirrorMethod::kCopy:
      r = co_await FilterDriver::co_pwritev(offset, *iov, flags);
      break;
    case MirrorMethod::kZero:
      r = co_await FilterDriver::co_pwrite_zeroes(offset, bytes, flags);
      break;
    case MirrorMethod::kDiscard:
      r = co_await FilterDriver::co_pdiscard(offset, bytes);
      break;
  }
  if (r && sink) {
    co_await sink->co_active_write(write, method, offset, bytes, iov, flags);
  } else if (sink_) {
    sink_->note_source_write(offset, bytes);
  }
  co_return r;
}

Task<Result<void>> MirrorTopDriver::co_pwritev(uint64_t offset, const IoVec& iov, uint32_t flags) {
  if (!sink_) co_return co_await FilterDriver::co_pwritev(offset, iov, flags);
  co_return co_await co_write(MirrorMethod::kCopy, offset, iov.size(), &iov, flags);
}

Task<Result<void>> MirrorTopDriver::co_pwrite_zeroes(uint64_t offset, uint64_t bytes,
                                                     uint32_t flags) {
  co_return co_await co_write(MirrorMethod::kZero, offset, bytes, nullptr, flags);
}

Task<Result<void>> MirrorTopDriver::co_pdiscard(uint64_t offset, uint64_t bytes) {
  co_return co_await co_write(MirrorMethod::kDiscard, offset, bytes, nullptr, 0);
}

void MirrorTopDriver::child_perm(const Child& child, uint64_t perm, uint64_t shared,
                                 uint64_t* nperm, uint64_t* nshared) const {
  if (stopped_) {
    *nperm = 0;
    *nshared = kPermAll;
    return;
  }
  filter_default_perms(perm, shared, nperm, nshared);
  if (commit_) {
    // The base below is written by the job: no consistent read of what is
    // above it, and writes below are shared.
    *nperm &= ~kPermConsistentRead;
    *nshared |= kPermWrite;
  }
}

void register_mirror_top_filter(DriverRegistry& registry) {
  registry.add(DriverSpec{.name = kMirrorTopDriver,
                          .kind = DriverKind::kFilter,
                          .options = {{"file", OptType::kChild, true}},
                          .create = [] { return std::make_unique<MirrorTopDriver>(); },
                          .internal = true});
}

}  // namespace strata
