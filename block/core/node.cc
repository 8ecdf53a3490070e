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
      requests_(engine.loop()),
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

uint64_t Node::block_ops(std::string reason, uint32_t allowed_ops) {
  blockers_.push_back({++next_blocker_id_, std::move(reason), allowed_ops});
  return next_blocker_id_;
}

void Node::unblock_ops(uint64_t id) {
  std::erase_if(blockers_, [id](const Blocker& b) { return b.id == id; });
}

Result<void> Node::check_op(BlockOp op) const {
  for (const Blocker& b : blockers_) {
    if (!(b.allowed_ops & block_op_bit(op))) {
      return Error{EBUSY, "Node '" + name_ + "' is busy: " + b.reason};
    }
  }
  return {};
}

void Node::quiesce() {
  if (quiesce_++ > 0) return;
  driver_->drained_begin();
  // Copy: an owner may detach while it is told.
  std::vector<Child*> users(parents_);
  for (Child* p : users) {
    if (p->owner()) p->owner()->drained_begin();
  }
}

bool Node::idle() const {
  if (in_flight_ != 0) return false;
  for (const Child* p : parents_) {
    if (p->owner() && p->owner()->drained_busy()) return false;
  }
  return true;
}

Task<void> Node::co_wait_idle() {
  while (!idle()) co_await idle_.wait();
}

Task<void> Node::co_drain_begin() {
  quiesce();
  co_await co_wait_idle();
}

void Node::drain_end() {
  if (quiesce_ == 0 || --quiesce_ > 0) return;
  driver_->drained_end();
  std::vector<Child*> users(parents_);
  for (Child* p : users) {
    if (p->owner()) p->owner()->drained_end();
  }
  unquiesced_.wake_all();
}

// One wait: the caller looks again at whatever node its edge points at by
// then (a pivot moves edges away from a node that may stay drained).
Task<void> Node::co_wait_unquiesced(const Child* caller) {
  if (quiesce_ > 0) co_await unquiesced_.wait();
}

// Child: requests through the edge. A root user's request that must wait
// for a drain waits here, at the edge, and then goes to whatever node the
// edge points at by then: a request queued during a pivot is served by the
// new node. Requests that need no waiting go straight to the node (no
// extra coroutine frame).

Task<void> Child::co_wait_drained() {
  while (node_->must_wait_unquiesced(this)) co_await node_->co_wait_unquiesced(this);
}

bool Child::must_wait_drained() const {
  return node_->must_wait_unquiesced(this);
}

Task<Result<void>> Child::co_preadv(uint64_t offset, const IoVec& iov, uint32_t flags) {
  if (!must_wait_drained()) return node_->co_preadv(offset, iov, flags, this);
  return co_after_drain<Result<void>>(
      [this, offset, &iov, flags] { return node_->co_preadv(offset, iov, flags, this); });
}

Task<Result<void>> Child::co_pread(uint64_t offset, std::span<uint8_t> buf) {
  IoVec iov(buf);
  co_return co_await co_preadv(offset, iov, 0);
}

Task<Result<void>> Child::co_splice_read(uint64_t offset, uint64_t bytes, Pipe& pipe) {
  if (!must_wait_drained()) return node_->co_splice_read(offset, bytes, pipe, this);
  return co_after_drain<Result<void>>(
      [this, offset, bytes, &pipe] { return node_->co_splice_read(offset, bytes, pipe, this); });
}

Task<Result<void>> Child::co_pwritev(uint64_t offset, const IoVec& iov, uint32_t flags) {
  if (!must_wait_drained()) return node_->co_pwritev(offset, iov, flags, this);
  return co_after_drain<Result<void>>(
      [this, offset, &iov, flags] { return node_->co_pwritev(offset, iov, flags, this); });
}

Task<Result<void>> Child::co_pwrite(uint64_t offset, std::span<const uint8_t> buf, uint32_t flags) {
  IoVec iov(const_cast<uint8_t*>(buf.data()), buf.size());
  co_return co_await co_pwritev(offset, iov, flags);
}

Task<Result<void>> Child::co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) {
  if (!must_wait_drained()) return node_->co_pwrite_zeroes(offset, bytes, flags, this);
  return co_after_drain<Result<void>>(
      [this, offset, bytes, flags] { return node_->co_pwrite_zeroes(offset, bytes, flags, this); });
}

Task<Result<void>> Child::co_pdiscard(uint64_t offset, uint64_t bytes) {
  if (!must_wait_drained()) return node_->co_pdiscard(offset, bytes, this);
  return co_after_drain<Result<void>>(
      [this, offset, bytes] { return node_->co_pdiscard(offset, bytes, this); });
}

Task<Result<void>> Child::co_flush() {
  if (!must_wait_drained()) return node_->co_flush(this);
  return co_after_drain<Result<void>>([this] { return node_->co_flush(this); });
}

Task<Result<BlockStatus>> Child::co_block_status(uint64_t offset, uint64_t bytes) {
  if (!must_wait_drained()) return node_->co_block_status(offset, bytes, this);
  return co_after_drain<Result<BlockStatus>>(
      [this, offset, bytes] { return node_->co_block_status(offset, bytes, this); });
}

Task<Result<void>> Child::co_truncate(uint64_t size, bool exact, Preallocation prealloc) {
  if (!must_wait_drained()) return node_->co_truncate(size, exact, prealloc, this);
  return co_after_drain<Result<void>>(
      [this, size, exact, prealloc] { return node_->co_truncate(size, exact, prealloc, this); });
}

}  // namespace strata
