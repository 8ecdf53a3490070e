// Node construction, edges, hooks and drain. The request paths are in io.cc.
#include "block/core/node.h"

#include <algorithm>

#include "block/bitmap/dirty_bitmap.h"
#include "strata/engine.h"

namespace strata {

Node::Node(Engine& engine, std::string name, bool implicit, std::string driver_name,
           std::unique_ptr<Driver> driver, NodeFlags flags)
    : engine_(engine),
      name_(std::move(name)),
      implicit_(implicit),
      driver_name_(std::move(driver_name)),
      driver_(std::move(driver)),
      flags_(flags),
      unquiesced_(engine.loop()),
      idle_(engine.loop()) {
  driver_->attach(this);
}

Node::~Node() = default;

BitmapSet& Node::bitmaps() {
  if (!bitmaps_) bitmaps_ = std::make_unique<BitmapSet>(*this);
  return *bitmaps_;
}

Loop& Node::loop() const {
  return engine_.loop();
}

Child* Node::child(std::string_view name) const {
  for (const auto& c : children_) {
    if (c->name() == name) return c.get();
  }
  return nullptr;
}

uint64_t Node::cumulative_perm() const {
  uint64_t perm = 0;
  for (const Child* p : parents_) perm |= p->perm();
  return perm;
}

uint64_t Node::cumulative_shared() const {
  uint64_t shared = kPermAll;
  for (const Child* p : parents_) shared &= p->shared();
  return shared;
}

Limits Node::limits() const {
  Limits l = driver_->limits();
  if (l.request_alignment == 0) l.request_alignment = 1;
  if (l.discard_alignment < l.request_alignment) l.discard_alignment = l.request_alignment;
  if (l.zeroes_alignment < l.request_alignment) l.zeroes_alignment = l.request_alignment;
  return l;
}

uint64_t Node::add_before_write_hook(BeforeWriteHook hook) {
  before_hooks_.emplace_back(++next_hook_id_, std::move(hook));
  return next_hook_id_;
}

uint64_t Node::add_after_write_hook(AfterWriteHook hook) {
  after_hooks_.emplace_back(++next_hook_id_, std::move(hook));
  return next_hook_id_;
}

void Node::remove_hook(uint64_t id) {
  std::erase_if(before_hooks_, [id](const auto& h) { return h.first == id; });
  std::erase_if(after_hooks_, [id](const auto& h) { return h.first == id; });
}

Task<Result<void>> Node::co_run_before_hooks(uint64_t offset, uint64_t bytes) {
  // Copy: a hook may remove itself (a filter being detached).
  auto hooks = before_hooks_;
  for (auto& [id, hook] : hooks) {
    auto r = co_await hook(offset, bytes);
    if (!r) co_return r;
  }
  co_return Result<void>{};
}

void Node::run_after_hooks(uint64_t offset, uint64_t bytes) {
  for (auto& [id, hook] : after_hooks_) hook(offset, bytes);
}

Task<void> Node::co_drain_begin() {
  quiesce_++;
  while (in_flight_ != 0) co_await idle_.wait();
}

void Node::drain_end() {
  if (quiesce_ > 0 && --quiesce_ == 0) unquiesced_.wake_all();
}

Task<void> Node::co_wait_unquiesced(const Child* caller) {
  if (!caller || !caller->is_root()) co_return;
  while (quiesce_ > 0) co_await unquiesced_.wait();
}

// Child: requests through the edge.

Task<Result<void>> Child::co_preadv(uint64_t offset, const IoVec& iov, uint32_t flags) {
  return node_->co_preadv(offset, iov, flags, this);
}

Task<Result<void>> Child::co_pread(uint64_t offset, std::span<uint8_t> buf) {
  IoVec iov(buf);
  co_return co_await node_->co_preadv(offset, iov, 0, this);
}

Task<Result<void>> Child::co_splice_read(uint64_t offset, uint64_t bytes, Pipe& pipe) {
  return node_->co_splice_read(offset, bytes, pipe, this);
}

Task<Result<void>> Child::co_pwritev(uint64_t offset, const IoVec& iov, uint32_t flags) {
  return node_->co_pwritev(offset, iov, flags, this);
}

Task<Result<void>> Child::co_pwrite(uint64_t offset, std::span<const uint8_t> buf, uint32_t flags) {
  IoVec iov(const_cast<uint8_t*>(buf.data()), buf.size());
  co_return co_await node_->co_pwritev(offset, iov, flags, this);
}

Task<Result<void>> Child::co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) {
  return node_->co_pwrite_zeroes(offset, bytes, flags, this);
}

Task<Result<void>> Child::co_pdiscard(uint64_t offset, uint64_t bytes) {
  return node_->co_pdiscard(offset, bytes, this);
}

Task<Result<void>> Child::co_flush() {
  return node_->co_flush(this);
}

Task<Result<BlockStatus>> Child::co_block_status(uint64_t offset, uint64_t bytes) {
  return node_->co_block_status(offset, bytes, this);
}

Task<Result<void>> Child::co_truncate(uint64_t size, bool exact, Preallocation prealloc) {
  return node_->co_truncate(size, exact, prealloc, this);
}

}  // namespace strata
