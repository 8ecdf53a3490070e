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
  friend class PermissionUpdate;
  Node* parent_;
  std::string user_;
  std::string name_;
  uint32_t role_;
  Node* node_;
  uint64_t perm_ = 0;
  uint64_t shared_ = kPermAll;
};

// Called before a write, write-zeroes or discard reaches the driver (the
// range may be widened to alignment). Failing it fails the request.
using BeforeWriteHook = std::function<Task<Result<void>>(uint64_t offset, uint64_t bytes)>;
// Called after a write, write-zeroes or discard succeeded (after the node's
// dirty bitmaps are marked).
using AfterWriteHook = std::function<void(uint64_t offset, uint64_t bytes)>;

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

  uint64_t add_before_write_hook(BeforeWriteHook hook);
  uint64_t add_after_write_hook(AfterWriteHook hook);
  void remove_hook(uint64_t id);

  BlockStats& stats() { return stats_; }
  const BlockStats& stats() const { return stats_; }

  // Dirty bitmaps of this node (block/bitmap/dirty_bitmap.h), created on
  // first use; bitmaps_if_any() is null until then.
  BitmapSet& bitmaps();
  BitmapSet* bitmaps_if_any() const { return bitmaps_.get(); }

  // Drain: requests from root users wait; returns once nothing is in flight
  // on this node. Nests; each begin needs one end.
  Task<void> co_drain_begin();
  void drain_end();
  bool quiesced() const { return quiesce_ > 0; }
  size_t in_flight() const { return in_flight_; }

 private:
  friend class Graph;
  friend class PermissionUpdate;
  struct Tracked;
  class RequestScope;

  // The wait coroutines are entered only when they would wait, so a request
  // that needs no waiting allocates no frame for them.
  bool must_wait_unquiesced(const Child* caller) const {
    return caller && caller->is_root() && quiesce_ > 0;
  }
  Task<void> co_wait_unquiesced(const Child* caller);
  Result<void> check_request(uint64_t offset, uint64_t bytes, const Child* caller,
                             bool write) const;
  Tracked* find_blocker(const Tracked& req) const;
  Task<void> co_wait_serialising(Tracked& req);
  bool has_before_hooks() const { return !before_hooks_.empty(); }
  bool is_one_driver_request(uint64_t offset, uint64_t bytes) const;
  Task<Result<void>> co_run_before_hooks(uint64_t offset, uint64_t bytes);
  void run_after_hooks(uint64_t offset, uint64_t bytes);
  // After a successful write, write-zeroes or discard: marks the dirty
  // bitmaps, then runs the after-write hooks.
  void mark_written(uint64_t offset, uint64_t bytes);
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

  std::list<Tracked*> tracked_;
  uint64_t next_hook_id_ = 0;
  std::vector<std::pair<uint64_t, BeforeWriteHook>> before_hooks_;
  std::vector<std::pair<uint64_t, AfterWriteHook>> after_hooks_;
  BlockStats stats_;
  int quiesce_ = 0;
  size_t in_flight_ = 0;
  CoQueue unquiesced_;
  CoQueue idle_;
  // Last: destroyed first, while the hooks it registered still exist.
  std::unique_ptr<BitmapSet> bitmaps_;
};

}  // namespace strata
