// A test driver: an in-memory disk with configurable alignment, transfer
// limits and per-request delay that records every request it sees.
#pragma once

#include <cstring>
#include <vector>

#include "block/core/graph.h"
#include "strata/engine.h"

namespace strata::testing {

struct MemRequest {
  char op;  // 'r', 'w', 'z', 'd', 'f'
  uint64_t offset;
  uint64_t bytes;
};

struct MemState {
  std::vector<uint8_t> data;
  std::vector<MemRequest> log;
  uint32_t alignment = 1;
  uint64_t max_transfer = 0;
  uint64_t delay_ms = 0;
  bool zeroes_supported = true;
  bool fua_supported = false;
  int concurrent = 0;
  int peak_concurrent = 0;
};

class MemDriver final : public Driver {
 public:
  explicit MemDriver(MemState* state) : s_(state) {}
  Task<Result<void>> co_open(OpenContext& ctx) override {
    loop_ = &ctx.loop();
    co_return Result<void>{};
  }
  Task<Result<void>> co_preadv(uint64_t offset, const IoVec& iov, uint32_t) override {
    co_await enter('r', offset, iov.size());
    iov.copy_from(0, s_->data.data() + offset, iov.size());
    leave();
    co_return Result<void>{};
  }
  Task<Result<void>> co_pwritev(uint64_t offset, const IoVec& iov, uint32_t) override {
    co_await enter('w', offset, iov.size());
    if (offset + iov.size() > s_->data.size()) s_->data.resize(offset + iov.size());
    iov.copy_to(0, s_->data.data() + offset, iov.size());
    leave();
    co_return Result<void>{};
  }
  Task<Result<void>> co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t) override {
    if (!s_->zeroes_supported) co_return Error{ENOTSUP, "no zeroes"};
    co_await enter('z', offset, bytes);
    std::memset(s_->data.data() + offset, 0, bytes);
    leave();
    co_return Result<void>{};
  }
  Task<Result<void>> co_pdiscard(uint64_t offset, uint64_t bytes) override {
    co_await enter('d', offset, bytes);
    leave();
    co_return Result<void>{};
  }
  Task<Result<void>> co_flush() override {
    co_await enter('f', 0, 0);
    leave();
    co_return Result<void>{};
  }
  Task<Result<void>> co_truncate(uint64_t size, bool, Preallocation) override {
    s_->data.resize(size);
    co_return Result<void>{};
  }
  uint64_t size() const override { return s_->data.size(); }
  Limits limits() const override {
    Limits l;
    l.request_alignment = s_->alignment;
    l.max_transfer = s_->max_transfer;
    l.supports_fua = s_->fua_supported;
    return l;
  }

 private:
  Task<void> enter(char op, uint64_t offset, uint64_t bytes) {
    s_->log.push_back({op, offset, bytes});
    if (op != 'f' && (offset % s_->alignment || bytes % s_->alignment)) {
      ADD_FAILURE() << "misaligned request reached the driver: " << op << " " << offset << "+"
                    << bytes;
    }
    if (s_->max_transfer && bytes > s_->max_transfer && (op == 'r' || op == 'w')) {
      ADD_FAILURE() << "request above max_transfer reached the driver";
    }
    s_->peak_concurrent = std::max(s_->peak_concurrent, ++s_->concurrent);
    if (s_->delay_ms) co_await loop_->co_sleep(s_->delay_ms);
  }
  void leave() { s_->concurrent--; }
  MemState* s_;
  Loop* loop_ = nullptr;
};

// Registers driver "mem" backed by `state` in `engine`.
inline void register_mem_driver(Engine& engine, MemState* state, const std::string& name = "mem") {
  engine.graph().drivers().add(DriverSpec{
      name, DriverKind::kProtocol, {}, [state] { return std::make_unique<MemDriver>(state); }});
}

}  // namespace strata::testing
