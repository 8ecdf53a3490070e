// Node and Child: the vertices and edges of the block graph.
//
// Contract: a Node owns its driver and its child edges; parents are borrowed
// pointers back to the edges that point at it. Every request enters through
// the node's dispatcher (co_preadv ... co_truncate), which is the only place
// that checks bounds and alignment, runs hooks and keeps statistics. A Child
// is held either by a parent node (role "file", "backing", ...) or by a root
// user outside the graph (an export, a job, an API handle); requests from a
// root user are bounds-checked and wait while the node is drained.
// Thread rules: loop-thread only.
#pragma once

#include <functional>
#include <list>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/gate.h"
#include "base/sync.h"
#include "block/core/driver.h"
#include "block/core/perm.h"
#include "block/core/range_lock.h"
#include "block/core/stats.h"
#include "block/core/types.h"

namespace strata {

class Engine;
class Graph;
class BitmapSet;

enum class DetectZeroes { kOff, kOn, kUnmap };

// Options every node has (QEMU's BlockdevOptions base).
struct NodeFlags {
  bool read_only = false;
  bool auto_read_only = false;
  bool force_share = false;
  bool cache_direct = false;
  bool cache_no_flush = false;
  bool discard_unmap = false;
  DetectZeroes detect_zeroes = DetectZeroes::kOff;
};

// The user behind a root edge (a job, an export, a drive), told when the
// node it uses is drained, as QEMU's BdrvChildClass drained_* callbacks.
// An owner with edges on several nodes is told once per node: it counts.
class EdgeOwner {
 public:
  virtual ~EdgeOwner() = default;
  // The node is being drained: stop issuing requests at the next safe point.
  virtual void drained_begin() {}
  // True while the owner still has work to wind down (a job that has not
  // reached its pause point); the drain waits. When that changes the owner
  // calls Node::kick_drain() on its nodes.
  virtual bool drained_busy() const { return false; }
  // The drain ended: carry on.
  virtual void drained_end() {}
};

class Child {
 public:
  Child(Node* parent, std::string user, std::string name, uint32_t role, Node* node)
      : parent_(parent), user_(std::move(user)), name_(std::move(name)), role_(role), node_(node) {}

  Node* parent() const { return parent_; }  // null for a root user
  bool is_root() const { return parent_ == nullptr; }
  const std::string& user() const { return user_; }  // "node 'x'", "NBD export 'e'", ...
  const std::string& name() const { return name_; }  // "file", "backing", "root", ...
  uint32_t role() const { return role_; }
  Node* node() const { return node_; }
  Node& operator*() const { return *node_; }
  Node* operator->() const { return node_; }
  uint64_t perm() const { return perm_; }
  uint64_t shared() const { return shared_; }

  // Root users only. A backend edge is a device-like user (an export, a
  // drive, a job's main node: QEMU's BlockBackend); other root edges are a
  // job's extra nodes. Requests from a root user wait while the node is
  // drained unless the edge opts out (a job, whose drained_busy() the drain
  // waits for instead).
  bool backend() const { return backend_; }
  bool waits_while_drained() const { return waits_while_drained_; }
  EdgeOwner* owner() const { return owner_; }
  void set_owner(EdgeOwner* owner, bool waits_while_drained) {
    owner_ = owner;
    waits_while_drained_ = waits_while_drained;
  }
  // An edge that stays at its node when the node is replaced (a job's own
  // edge to its source must not follow a pivot), as QEMU's stay_at_node.
  bool stays_at_node() const { return stay_at_node_; }
  void set_stays_at_node(bool v) { stay_at_node_ = v; }
  // A frozen edge cannot be retargeted, replaced or detached (a backing
  // chain a job works on; Graph::co_freeze_chain).
  bool frozen() const { return frozen_; }

  // Requests through this edge (see Node for semantics).
  Task<Result<void>> co_preadv(uint64_t offset, const IoVec& iov, uint32_t flags = 0);
  Task<Result<void>> co_pread(uint64_t offset, std::span<uint8_t> buf);
  Task<Result<void>> co_splice_read(uint64_t offset, uint64_t bytes, Pipe& pipe);
  Task<Result<void>> co_pwritev(uint64_t offset, const IoVec& iov, uint32_t flags = 0);
  Task<Result<void>> co_pwrite(uint64_t offset, std::span<const uint8_t> buf, uint32_t flags = 0);
  Task<Result<void>> co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags = 0);
  Task<Result<void>> co_pdiscard(uint64_t offset, uint64_t bytes);
  Task<Result<void>> co_flush();
  Task<Result<BlockStatus>> co_block_status(uint64_t offset, uint64_t bytes);
  Task<Result<void>> co_truncate(uint64_t size, bool exact = false,
                                 Preallocation prealloc = Preallocation::kOff);

 private:
  friend class Graph;
  friend class GraphChange;
  friend class PermissionUpdate;
  bool must_wait_drained() const;
  Task<void> co_wait_drained();
  // The slow path of a request that must wait for a drain first; `make`
  // issues it to the node the edge points at once the wait is over.
  template <typename T, typename F>
  Task<T> co_after_drain(F make) {
    co_await co_wait_drained();
    co_return co_await make();
  }
  Node* parent_;
  std::string user_;
  std::string name_;
  uint32_t role_;
  Node* node_;
  uint64_t perm_ = 0;
  uint64_t shared_ = kPermAll;
  EdgeOwner* owner_ = nullptr;
  bool backend_ = true;
  bool waits_while_drained_ = true;
  bool stay_at_node_ = false;
  bool frozen_ = false;
};

enum class WriteKind { kWrite, kZeroes, kDiscard };

class Node {
 public:
  Node(Engine& engine, std::string name, bool implicit, std::string driver_name,
       std::unique_ptr<Driver> driver, NodeFlags flags);
  ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  Engine& engine() const { return engine_; }
  Loop& loop() const;
  const std::string& name() const { return name_; }
  bool implicit() const { return implicit_; }
  const std::string& driver_name() const { return driver_name_; }
  Driver& driver() const { return *driver_; }
  const NodeFlags& flags() const { return flags_; }
  NodeFlags& mutable_flags() { return flags_; }
  bool read_only() const { return flags_.read_only; }
  // The options the node was opened with (for query and reopen).
  const nlohmann::json& options() const { return options_; }
  void set_options(nlohmann::json o) { options_ = std::move(o); }
  // Set when the user added the node (blockdev-add) rather than a parent.
  bool monitor_owned() const { return monitor_owned_; }
  void set_monitor_owned(bool v) { monitor_owned_ = v; }

  const std::vector<std::unique_ptr<Child>>& children() const { return children_; }
  Child* child(std::string_view name) const;
  const std::vector<Child*>& parents() const { return parents_; }
  // The `backing` child, the `file` child, or a filter's filtered child.
  Child* backing() const { return child("backing"); }
  Child* file() const { return child("file"); }
  Child* filtered() const { return driver_->filtered_child(); }
  // Cumulative permissions of all parents.
  uint64_t cumulative_perm() const;
  uint64_t cumulative_shared() const;

  uint64_t size() const { return driver_->size(); }
  Limits limits() const;

  // The dispatcher. `caller` is the edge the request came through (null for
  // internal requests, which are neither bounds-checked nor blocked by drain).
  Task<Result<void>> co_preadv(uint64_t offset, const IoVec& iov, uint32_t flags,
                               const Child* caller = nullptr);
  // A read whose data is appended to `pipe` (Driver::co_splice_read): it
  // is checked, waits, is tracked and counted as a read. Requests that
  // would need alignment or splitting fail with ENOTSUP, as does a driver
  // that cannot splice; either way nothing was appended. Neither ENOTSUP nor
  // EAGAIN (the pipe filled up) is counted: the caller reads instead.
  Task<Result<void>> co_splice_read(uint64_t offset, uint64_t bytes, Pipe& pipe,
                                    const Child* caller = nullptr);
  Task<Result<void>> co_pwritev(uint64_t offset, const IoVec& iov, uint32_t flags,
                                const Child* caller = nullptr);
  Task<Result<void>> co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags,
                                      const Child* caller = nullptr);
  Task<Result<void>> co_pdiscard(uint64_t offset, uint64_t bytes, const Child* caller = nullptr);
  Task<Result<void>> co_flush(const Child* caller = nullptr);
  // Status of the extent at `offset`, at most `bytes` long; kStatusRecurse
  // answers are resolved through the named child.
  Task<Result<BlockStatus>> co_block_status(uint64_t offset, uint64_t bytes,
                                            const Child* caller = nullptr);
  Task<Result<void>> co_truncate(uint64_t size, bool exact, Preallocation prealloc,
                                 const Child* caller = nullptr);

  BlockStats& stats() { return stats_; }
  const BlockStats& stats() const { return stats_; }

  // Dirty bitmaps of this node (block/bitmap/dirty_bitmap.h), created on
  // first use; bitmaps_if_any() is null until then.
  BitmapSet& bitmaps();
  BitmapSet* bitmaps_if_any() const { return bitmaps_.get(); }

  // The write threshold (block/core/write_threshold.h; 0: none). The
  // dispatcher disarms it when a request passes it and tells the graph's
  // listeners.
  uint64_t write_threshold() const { return write_threshold_; }
  void set_write_threshold(uint64_t bytes) { write_threshold_ = bytes; }

  // Drain of this node alone (Graph::co_drain drains a node with its
  // parents, a subtree or everything): quiesce() makes requests from root
  // users wait (those that opt out excepted) and tells root owners;
  // co_wait_idle() returns once no request is in flight on the node and no
  // root owner is busy. co_drain_begin() is both. Nests; each begin needs
  // one drain_end().
  void quiesce();
  Task<void> co_wait_idle();
  Task<void> co_drain_begin();
  void drain_end();
  bool quiesced() const { return quiesce_ > 0; }
  bool idle() const;
  size_t in_flight() const { return in_flight_; }
  // A root owner that was busy is not any more: wakes drains waiting here.
  void kick_drain() { idle_.wake_all(); }

  // In-flight requests by range (the dispatcher's serialisation); copy
  // engines and filters may take ranges of their own in it.
  RangeLock& requests() { return requests_; }

  // Operation blockers (QEMU's bdrv_op_block): while any blocker holds op,
  // check_op(op) fails with "Node 'x' is busy: <reason>".
  uint64_t block_ops(std::string reason, uint32_t allowed_ops = 0);
  void unblock_ops(uint64_t id);
  Result<void> check_op(BlockOp op) const;

 private:
  friend class Child;
  friend class Graph;
  friend class GraphChange;
  friend class PermissionUpdate;
  class RequestScope;

  // The wait coroutines are entered only when they would wait, so a request
  // that needs no waiting allocates no frame for them.
  bool must_wait_unquiesced(const Child* caller) const {
    return quiesce_ > 0 && caller && caller->is_root() && caller->waits_while_drained();
  }
  // One wait for the end of a drain (or for an edge moved away): callers
  // loop on must_wait_unquiesced().
  Task<void> co_wait_unquiesced(const Child* caller);
  Result<void> check_request(uint64_t offset, uint64_t bytes, const Child* caller,
                             bool write) const;
  bool is_one_driver_request(uint64_t offset, uint64_t bytes) const;
  // After a successful write, write-zeroes or discard: marks the dirty
  // bitmaps.
  void mark_written(uint64_t offset, uint64_t bytes, const Child* caller);
  // Before a write, write-zeroes or discard runs: the write threshold.
  void check_write_threshold(uint64_t offset, uint64_t bytes);
  void check_zeroes_threshold(uint64_t offset, uint64_t bytes);
  Task<Result<void>> co_read_aligned(uint64_t offset, const IoVec& iov, uint32_t flags);
  // Copy-on-read (kReqCopyOnRead), in io.cc.
  Task<Result<void>> co_copy_on_read(uint64_t offset, const IoVec& iov, uint32_t flags);
  Task<Result<void>> co_copy_in(uint64_t pos, uint64_t bytes, uint64_t offset, const IoVec& iov);
  Task<Result<void>> co_write_unchanged(uint64_t pos, const IoVec& data);
  void account_read(bool ok, uint64_t bytes, uint64_t start_ns);
  Task<Result<void>> co_write_aligned(uint64_t offset, const IoVec& iov, uint32_t flags);
  Task<Result<void>> co_write_rmw(uint64_t offset, const IoVec& iov, uint32_t flags);
  Task<Result<void>> co_zeroes_aligned(uint64_t offset, uint64_t bytes, uint32_t flags);
  Task<Result<void>> co_zeroes_by_writing(uint64_t offset, uint64_t bytes, uint32_t flags);
  Task<Result<void>> co_zeroes_unaligned(uint64_t offset, uint64_t bytes, uint32_t flags);
  Task<Result<void>> co_do_write(uint64_t offset, const IoVec& iov, uint32_t flags,
                                 const Child* caller);
  Task<Result<void>> co_do_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags);
  Task<Result<BlockStatus>> co_resolve_status(uint64_t offset, uint64_t bytes);

  Engine& engine_;
  std::string name_;
  bool implicit_;
  std::string driver_name_;
  std::unique_ptr<Driver> driver_;
  NodeFlags flags_;
  nlohmann::json options_;
  bool monitor_owned_ = false;
  std::vector<std::unique_ptr<Child>> children_;
  std::vector<Child*> parents_;

  RangeLock requests_;
  struct Blocker {
    uint64_t id;
    std::string reason;
    uint32_t allowed_ops;
  };
  std::vector<Blocker> blockers_;
  uint64_t next_blocker_id_ = 0;
  BlockStats stats_;
  int quiesce_ = 0;
  size_t in_flight_ = 0;
  CoQueue unquiesced_;
  CoQueue idle_;
  std::unique_ptr<BitmapSet> bitmaps_;
  uint64_t write_threshold_ = 0;
};

}  // namespace strata
