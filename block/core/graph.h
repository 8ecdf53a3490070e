// Graph: the registry of nodes of one Engine and every structural change to
// it: opening nodes from blockdev-style options, attaching edges with
// permission checks, replacing nodes, deleting them.
//
// Contract: permissions are re-derived from the users down after every
// change; a change whose permissions conflict (or whose image locks another
// process holds) is refused and leaves the graph as it was. Implicit nodes
// (opened inline as children) live as long as a parent uses them.
// Thread rules: loop-thread only.
#pragma once

#include <list>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "block/core/credentials.h"
#include "block/core/driver_registry.h"
#include "block/core/node.h"
#include "block/core/write_threshold.h"

namespace strata {

class Engine;
class Graph;
class ThrottleGroups;

// A drained section of the graph (Graph::co_drain): while it lives, root
// users' requests to its nodes wait and nothing is in flight on them. Ends
// when destroyed (or end()). A node closed meanwhile leaves the section.
class DrainSection {
 public:
  DrainSection(const DrainSection&) = delete;
  DrainSection& operator=(const DrainSection&) = delete;
  ~DrainSection();
  void end();
  bool contains(const Node* node) const;

 private:
  friend class Graph;
  explicit DrainSection(Graph& graph) : graph_(graph) {}
  Graph& graph_;
  std::vector<Node*> nodes_;
};

// What a drain covers: the nodes and everything above them (what can send
// them requests), or also everything below them and what is above that.
enum class DrainScope { kParents, kSubtree };

// What a driver gets while it opens: its options and a way to open children.
class OpenContext {
 public:
  OpenContext(Graph& graph, Node& node, nlohmann::json options)
      : graph_(graph), node_(node), options_(std::move(options)) {}

  Graph& graph() const { return graph_; }
  Node& node() const { return node_; }
  Loop& loop() const;
  // The driver's own options (common ones already removed), validated
  // against the driver's option list.
  const nlohmann::json& options() const { return options_; }

  // Opens the child `key` from options()[key]: inline options open an
  // implicit node; a string names an existing node. Missing and not
  // `required`: returns null.
  Task<Result<Child*>> co_open_child(const std::string& key, uint32_t role, bool required);
  // Opens child `key` from options the driver built (a backing file named
  // in an image header, say).
  Task<Result<Child*>> co_open_child_with(const std::string& key, nlohmann::json child_options,
                                          uint32_t role);

 private:
  Graph& graph_;
  Node& node_;
  nlohmann::json options_;
};

class Graph {
 public:
  explicit Graph(Engine& engine);
  ~Graph();
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  Engine& engine() const { return engine_; }
  DriverRegistry& drivers() { return drivers_; }
  // TLS credentials by object id, for drivers that connect (nbd).
  CredentialStore& credentials() { return credentials_; }
  // I/O throttling groups by name, for throttle nodes
  // (block/filters/throttle_group.h).
  ThrottleGroups& throttle_groups() { return *throttle_groups_; }
  // Told when a node's write threshold is passed (Node::write_threshold).
  WriteThresholdListeners& write_threshold_listeners() { return write_threshold_listeners_; }

  // blockdev-add. A top-level node needs a node-name unless `implicit`.
  Task<Result<Node*>> co_add(nlohmann::json options, bool implicit = false);
  // A node of a driver only jobs open (DriverSpec::internal), implicit
  // (auto-named) when the options name no node.
  Task<Result<Node*>> co_add_internal(nlohmann::json options);
  // Opens a child node of `parent` from inline options; it inherits
  // read-only / force-share / cache options as QEMU's children do.
  Task<Result<Node*>> co_add_child_node(Node& parent, const std::string& key,
                                        nlohmann::json options, uint32_t role);

  Node* find(std::string_view name) const;
  std::vector<Node*> nodes() const;
  // Named (monitor-owned) nodes in creation order.
  std::vector<Node*> named_nodes() const;

  // Edges. Each checks permissions and image locks.
  Result<Child*> attach_child(Node& parent, Node& child, const std::string& name, uint32_t role);
  // A root user. `backend`: a device-like user (export, drive, a job's main
  // node; see Child::backend()); `owner`, if any, is told about drains
  // and, unless `waits_while_drained`, its requests are not held back by
  // them (it must then wind down when told, as a job does).
  struct RootOptions {
    bool backend = true;
    EdgeOwner* owner = nullptr;
    bool waits_while_drained = true;
    bool stays_at_node = false;
  };
  Result<Child*> attach_root(Node& node, const std::string& user, uint64_t perm, uint64_t shared,
                             RootOptions options);
  Result<Child*> attach_root(Node& node, const std::string& user, uint64_t perm, uint64_t shared) {
    return attach_root(node, user, perm, shared, RootOptions{});
  }
  Result<void> set_root_perm(Child& root, uint64_t perm, uint64_t shared);
  // Removes an edge; implicit nodes nobody uses any more are closed.
  Task<void> co_detach(Child* edge);
  // Closes `node` if it is implicit and nobody uses it any more. A node
  // whose close is already under way (a background detach) is not closed
  // twice: the call waits for that close to finish.
  Task<void> co_release_if_unused(Node* node);
  // Points an existing parent edge at another node (backing change, pivot).
  // A frozen edge is refused.
  Result<void> retarget(Child& edge, Node& to);

  // Re-derives permissions after `node`'s flags changed (blockdev-reopen,
  // snapshot commit making the old image read-only); on a conflict nothing
  // changes and the caller restores the flags.
  Result<void> refresh_node_perms(Node& node) { return refresh_perms({&node}); }

  // Moves every parent of `from` to `to` (GraphChange::replace: edges that
  // stay at their node and edges from `to` or below it excepted), after
  // draining both and everything above them.
  Task<Result<void>> co_replace_node(Node& from, Node& to);

  // Drains `nodes` (see DrainScope) until the section ends: first every
  // node is quiesced (root users' new requests wait, root owners are told),
  // then the drain waits until none has a request in flight or a busy
  // owner.
  Task<std::unique_ptr<DrainSection>> co_drain(std::vector<Node*> nodes,
                                               DrainScope scope = DrainScope::kParents);
  // Every node (a transaction that touches many).
  Task<std::unique_ptr<DrainSection>> co_drain_all();

  // Chain freezing (QEMU's bdrv_freeze_backing_chain): the backing or
  // filtered edge of `top` and of each node below it, down to `base`
  // (exclusive: base's own edges stay free; null: the whole chain), cannot
  // be retargeted, replaced or detached until unfrozen. Fails, freezing
  // nothing, if `base` is not in the chain or an edge is frozen already.
  Result<void> freeze_chain(Node& top, Node* base);
  void unfreeze_chain(Node& top, Node* base);
  // Fails with QEMU's message if an edge from `top` down to `base` is
  // frozen.
  Result<void> check_chain_not_frozen(Node& top, Node* base) const;
  // The edge a chain walk follows below `node`: its backing edge, or for
  // a filter its filtered edge (QEMU's bdrv_filter_or_cow_child).
  static Child* chain_child(const Node& node);

  // blockdev-del: a monitor-owned node without parents.
  Task<Result<void>> co_del(const std::string& name);
  // Flushes and closes every node (shutdown), waiting for closes already
  // under way.
  Task<void> co_close_all();

  static Result<void> check_node_name(const std::string& name);
  // True if `to` is below `from`.
  static bool reaches(const Node& from, const Node& to);

 private:
  friend class OpenContext;
  friend class PermissionUpdate;
  friend class GraphChange;
  friend class DrainSection;
  std::string next_implicit_name();
  Result<NodeFlags> parse_common(nlohmann::json& options, const NodeFlags* inherited,
                                 uint32_t role);
  Task<Result<Node*>> co_open_node(nlohmann::json options, bool implicit,
                                   const NodeFlags* inherited, uint32_t role,
                                   bool allow_internal = false);
  Result<void> refresh_perms(const std::vector<Node*>& changed);
  Task<void> co_close_node(Node* node);
  Task<void> co_close_node_once(Node* node);
  bool closing(const Node* node) const { return closing_.count(node) > 0; }
  void unlink_parent(Child* edge);
  // Points `edge` at `to`, telling the edge's owner if the drain state of
  // its node changes (no permission update).
  void move_edge(Child* edge, Node* to);
  void drain_closure(Node* node, DrainScope scope, std::set<Node*>& out) const;

  Engine& engine_;
  DriverRegistry drivers_;
  CredentialStore credentials_;
  // Outlives the nodes (cleared in ~Graph), whose throttle members use it.
  std::unique_ptr<ThrottleGroups> throttle_groups_;
  WriteThresholdListeners write_threshold_listeners_;
  std::map<std::string, std::unique_ptr<Node>, std::less<>> nodes_;
  std::vector<Node*> order_;  // creation order
  std::list<std::unique_ptr<Child>> roots_;
  std::vector<DrainSection*> sections_;
  uint64_t implicit_counter_ = 0;
  // Nodes whose close has started and not finished (it suspends while the
  // node drains and flushes); `closed_` wakes whoever waits for one.
  std::set<const Node*> closing_;
  CoQueue closed_;
};

}  // namespace strata
