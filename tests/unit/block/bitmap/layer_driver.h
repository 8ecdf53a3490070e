// A test format driver for bitmap tests: an image layer that stores no data
// but remembers which 512-byte sectors it allocated, with an optional
// backing child, a settable cluster size and failure injection.
#pragma once

#include <vector>

#include "block/core/graph.h"
#include "strata/engine.h"

namespace strata::testing {

struct LayerState {
  uint64_t size = 0;
  std::vector<bool> allocated;  // per 512-byte sector
  uint64_t cluster_size = 0;
  bool fail_writes = false;
  void allocate(uint64_t offset, uint64_t bytes, bool on) {
    for (uint64_t s = offset / 512; s < (offset + bytes + 511) / 512 && s < allocated.size(); s++) {
      allocated[s] = on;
    }
  }
};

class LayerDriver final : public Driver {
 public:
  explicit LayerDriver(LayerState* state) : s_(state) {}
  Task<Result<void>> co_open(OpenContext& ctx) override {
    s_->allocated.resize((s_->size + 511) / 512);
    if (ctx.options().contains("backing")) {
      auto b = co_await ctx.co_open_child("backing", kRoleCow, false);
      if (!b) co_return std::move(b).error();
    }
    co_return Result<void>{};
  }
  Task<Result<void>> co_preadv(uint64_t, const IoVec& iov, uint32_t) override {
    iov.fill(0, iov.size(), 0);
    co_return Result<void>{};
  }
  Task<Result<void>> co_pwritev(uint64_t offset, const IoVec& iov, uint32_t) override {
    co_return mutate(offset, iov.size(), true);
  }
  Task<Result<void>> co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t) override {
    co_return mutate(offset, bytes, true);
  }
  Task<Result<void>> co_pdiscard(uint64_t offset, uint64_t bytes) override {
    co_return mutate(offset, bytes, false);
  }
  Task<Result<BlockStatus>> co_block_status(uint64_t offset, uint64_t bytes) override {
    uint64_t s = offset / 512;
    bool on = s_->allocated[s];
    uint64_t end = s + 1;
    while (end < s_->allocated.size() && end * 512 < offset + bytes && s_->allocated[end] == on) {
      end++;
    }
    BlockStatus st;
    st.flags = on ? uint32_t{kStatusData} : 0u;
    st.bytes = std::min(end * 512, offset + bytes) - offset;
    co_return st;
  }
  Task<Result<void>> co_truncate(uint64_t size, bool, Preallocation) override {
    s_->size = size;
    s_->allocated.resize((size + 511) / 512);
    co_return Result<void>{};
  }
  uint64_t size() const override { return s_->size; }
  uint64_t cluster_size() const override { return s_->cluster_size; }
  bool supports_backing() const override { return true; }
  void child_perm(const Child& child, uint64_t perm, uint64_t shared, uint64_t* nperm,
                  uint64_t* nshared) const override {
    if (child.name() == "backing") {
      cow_default_perms(perm, shared, nperm, nshared);
    } else {
      Driver::child_perm(child, perm, shared, nperm, nshared);
    }
  }

 private:
  Result<void> mutate(uint64_t offset, uint64_t bytes, bool allocate) {
    if (s_->fail_writes) return Error{EIO, "injected failure"};
    s_->allocate(offset, bytes, allocate);
    return {};
  }
  LayerState* s_;
};

// Registers format driver `name` whose nodes use `state`.
inline void register_layer_driver(Engine& engine, LayerState* state, const std::string& name) {
  engine.graph().drivers().add(
      DriverSpec{name, DriverKind::kFormat, {{"backing", OptType::kChildOrNull}}, [state] {
                   return std::make_unique<LayerDriver>(state);
                 }});
}

}  // namespace strata::testing
