// null-co: a device of a given size that stores nothing; reads return
// zeroes with read-zeroes=true and leave the buffer alone otherwise (as
// QEMU), and every request may be delayed by latency-ns.
#include "block/core/graph.h"

namespace strata {

namespace {

class NullDriver final : public Driver {
 public:
  Task<Result<void>> co_open(OpenContext& ctx) override {
    const auto& o = ctx.options();
    int64_t size = opt_int(o, "size", 1ll << 30);
    int64_t latency = opt_int(o, "latency-ns", 0);
    if (size < 0) co_return Error{EINVAL, "size cannot be negative"};
    if (latency < 0) co_return Error{EINVAL, "latency-ns is invalid"};
    size_ = static_cast<uint64_t>(size);
    latency_ms_ = static_cast<uint64_t>(latency) / 1000000;
    read_zeroes_ = opt_bool(o, "read-zeroes", false);
    loop_ = &ctx.loop();
    co_return Result<void>{};
  }
  Task<Result<void>> co_preadv(uint64_t, const IoVec& iov, uint32_t) override {
    co_await delay();
    if (read_zeroes_) iov.fill(0, iov.size(), 0);
    co_return Result<void>{};
  }
  Task<Result<void>> co_pwritev(uint64_t, const IoVec&, uint32_t) override {
    co_await delay();
    co_return Result<void>{};
  }
  Task<Result<void>> co_pwrite_zeroes(uint64_t, uint64_t, uint32_t) override {
    co_await delay();
    co_return Result<void>{};
  }
  Task<Result<void>> co_flush() override {
    co_await delay();
    co_return Result<void>{};
  }
  Task<Result<BlockStatus>> co_block_status(uint64_t offset, uint64_t bytes) override {
    BlockStatus st;
    st.flags = kStatusOffsetValid | (read_zeroes_ ? uint32_t{kStatusZero} : 0);
    st.bytes = bytes;
    st.map_offset = offset;
    st.map_node = &node();
    co_return st;
  }
  Task<Result<void>> co_truncate(uint64_t size, bool, Preallocation) override {
    size_ = size;
    co_return Result<void>{};
  }
  uint64_t size() const override { return size_; }
  Task<Result<void>> co_reopen_prepare(const NodeFlags&) override { return accept_any_reopen(); }
  std::string filename() const override {
    return read_zeroes_ ? "null-co://,read-zeroes=on" : "null-co://";
  }

 private:
  Task<void> delay() {
    if (latency_ms_) co_await loop_->co_sleep(latency_ms_);
  }
  Loop* loop_ = nullptr;
  uint64_t size_ = 0;
  uint64_t latency_ms_ = 0;
  bool read_zeroes_ = false;
};

}  // namespace

void register_null_driver(DriverRegistry& registry) {
  registry.add(DriverSpec{
      "null-co",
      DriverKind::kProtocol,
      {{"size", OptType::kInt}, {"latency-ns", OptType::kInt}, {"read-zeroes", OptType::kBool}},
      [] { return std::make_unique<NullDriver>(); },
      {"null-co"},
      [](const std::string& filename) -> Result<nlohmann::json> {
        if (filename != "null-co://") {
          return Error{EINVAL, "The only allowed filename for this driver is 'null-co://'"};
        }
        return nlohmann::json::object();
      }});
}

}  // namespace strata
