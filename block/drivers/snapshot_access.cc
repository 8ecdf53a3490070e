// snapshot-access: a read-only node showing the point-in-time view that its
// `file` child keeps (QEMU's snapshot-access over a copy-before-write node;
// block/core/snapshot_api.h). Reads and block status answer for the view,
// discard drops clusters from it (a pull-mode backup client gives back the
// fleecing space of what it has read), writes and write-zeroes fail with
// ENOTSUP. It takes no permission on its child, as QEMU's: the view needs
// none. A child without the API is refused at open.
// Thread rules: loop-thread only.
#include "block/core/graph.h"
#include "block/core/snapshot_api.h"

namespace strata {

namespace {

class SnapshotAccessDriver final : public Driver {
 public:
  Task<Result<void>> co_open(OpenContext& ctx) override {
    STRATA_CO_TRY_ASSIGN(file_, co_await ctx.co_open_child("file", kRoleData | kRolePrimary, true));
    api_ = file_->node()->driver().snapshot_api();
    if (!api_) {
      co_return Error{EINVAL, "Node '" + file_->node()->name() +
                                  "' does not keep a point-in-time view (use copy-before-write)"};
    }
    co_return Result<void>{};
  }
  Task<Result<void>> co_preadv(uint64_t offset, const IoVec& iov, uint32_t) override {
    return api_->co_snapshot_preadv(offset, iov);
  }
  Task<Result<void>> co_pwritev(uint64_t, const IoVec&, uint32_t) override {
    co_return not_supported();
  }
  Task<Result<void>> co_pwrite_zeroes(uint64_t, uint64_t, uint32_t) override {
    co_return not_supported();
  }
  Task<Result<void>> co_pdiscard(uint64_t offset, uint64_t bytes) override {
    return api_->co_snapshot_pdiscard(offset, bytes);
  }
  Task<Result<void>> co_flush() override { co_return Result<void>{}; }
  Task<Result<BlockStatus>> co_block_status(uint64_t offset, uint64_t bytes) override {
    return api_->co_snapshot_block_status(offset, bytes);
  }
  uint64_t size() const override { return file_->node()->size(); }
  void child_perm(const Child&, uint64_t, uint64_t, uint64_t* nperm,
                  uint64_t* nshared) const override {
    *nperm = 0;
    *nshared = kPermAll;
  }
  Task<Result<void>> co_reopen_prepare(const NodeFlags&) override { return accept_any_reopen(); }
  std::string filename() const override { return file_->node()->driver().filename(); }

 private:
  static Error not_supported() { return Error{ENOTSUP, "Operation not supported"}; }
  Child* file_ = nullptr;
  SnapshotApi* api_ = nullptr;
};

}  // namespace

void register_snapshot_access_driver(DriverRegistry& registry) {
  registry.add(DriverSpec{.name = "snapshot-access",
                          .kind = DriverKind::kFormat,
                          .options = {{"file", OptType::kChild, true}},
                          .create = [] { return std::make_unique<SnapshotAccessDriver>(); }});
}

}  // namespace strata
