// throttle: a filter that holds reads and writes back to the limits of a
// throttle group (QEMU's block/throttle.c). Options: `file` and
// `throttle-group`, the name of an existing group (Graph::throttle_groups).
//
// Reads count as reads; writes, write-zeroes and discards as writes, with
// their length in bytes. Flush, block status and truncate pass through
// unthrottled. Splice reads are refused (ENOTSUP), so that each read is
// counted once, on the co_preadv path the caller falls back to. While the
// node is drained its requests go without waiting (QEMU's
// io_limits_disabled), so drains, closes and graph changes do not wait for
// the limits.
#include "block/core/filter.h"
#include "block/core/graph.h"
#include "block/filters/throttle_group.h"

namespace strata {

namespace {

class ThrottleDriver final : public FilterDriver {
 public:
  Task<Result<void>> co_open(OpenContext& ctx) override {
    if (auto r = co_await FilterDriver::co_open(ctx); !r) co_return r;
    std::string name = ctx.options().value("throttle-group", "");
    ThrottleGroup* group = ctx.graph().throttle_groups().find(name);
    if (!group) co_return Error{EINVAL, "Throttle group '" + name + "' does not exist"};
    member_ = std::make_unique<ThrottleGroupMember>(*group);
    co_return Result<void>{};
  }
  Task<Result<void>> co_preadv(uint64_t offset, const IoVec& iov, uint32_t flags) override {
    co_await member_->co_intercept(ThrottleDirection::kRead, iov.size());
    co_return co_await FilterDriver::co_preadv(offset, iov, flags);
  }
  Task<Result<void>> co_splice_read(uint64_t, uint64_t, Pipe&) override {
    co_return Error{ENOTSUP, "throttled reads take co_preadv"};
  }
  Task<Result<void>> co_pwritev(uint64_t offset, const IoVec& iov, uint32_t flags) override {
    co_await member_->co_intercept(ThrottleDirection::kWrite, iov.size());
    co_return co_await FilterDriver::co_pwritev(offset, iov, flags);
  }
  Task<Result<void>> co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) override {
    co_await member_->co_intercept(ThrottleDirection::kWrite, bytes);
    co_return co_await FilterDriver::co_pwrite_zeroes(offset, bytes, flags);
  }
  Task<Result<void>> co_pdiscard(uint64_t offset, uint64_t bytes) override {
    co_await member_->co_intercept(ThrottleDirection::kWrite, bytes);
    co_return co_await FilterDriver::co_pdiscard(offset, bytes);
  }
  void drained_begin() override {
    if (member_) member_->disable_limits();
  }
  void drained_end() override {
    if (member_) member_->enable_limits();
  }
  nlohmann::json block_info_extension() const override {
    if (!member_) return nullptr;
    return {{"x-throttle-group", member_->group().name()}};
  }

 private:
  std::unique_ptr<ThrottleGroupMember> member_;
};

}  // namespace

void register_throttle_filter(DriverRegistry& registry) {
  registry.add(
      DriverSpec{"throttle",
                 DriverKind::kFilter,
                 {{"file", OptType::kChild, true}, {"throttle-group", OptType::kString, true}},
                 [] { return std::make_unique<ThrottleDriver>(); }});
}

}  // namespace strata
