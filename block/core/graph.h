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

namespace strata {

class Engine;
class Graph;

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

  // blockdev-add. A top-level node needs a node-name unless `implicit`.
  Task<Result<Node*>> co_add(nlohmann::json options, bool implicit = false);
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
  Result<Child*> attach_root(Node& node, const std::string& user, uint64_t perm, uint64_t shared);
  Result<void> set_root_perm(Child& root, uint64_t perm, uint64_t shared);
  // Removes an edge; implicit nodes nobody uses any more are closed.
  Task<void> co_detach(Child* edge);
  // Closes `node` if it is implicit and nobody uses it any more. A node
  // whose close is already under way (a background detach) is not closed
  // twice: the call waits for that close to finish.
  Task<void> co_release_if_unused(Node* node);
  // Points an existing parent edge at another node (backing change, pivot).
  Result<void> retarget(Child& edge, Node& to);

  // Re-derives permissions after `node`'s flags changed (blockdev-reopen,
  // snapshot commit making the old image read-only); on a conflict nothing
  // changes and the caller restores the flags.
  Result<void> refresh_node_perms(Node& node) { return refresh_perms({&node}); }

  // Moves every parent of `from` (except `to` itself) to `to`, after
  // draining both.
  Task<Result<void>> co_replace_node(Node& from, Node& to);

  // blockdev-del: a monitor-owned node without parents.
  Task<Result<void>> co_del(const std::string& name);
  // Flushes and closes every node (shutdown), waiting for closes already
  // under way.
  Task<void> co_close_all();

  static Result<void> check_node_name(const std::string& name);

 private:
  friend class OpenContext;
  friend class PermissionUpdate;
  std::string next_implicit_name();
  Result<NodeFlags> parse_common(nlohmann::json& options, const NodeFlags* inherited,
                                 uint32_t role);
  Task<Result<Node*>> co_open_node(nlohmann::json options, bool implicit,
                                   const NodeFlags* inherited, uint32_t role);
  Result<void> refresh_perms(const std::vector<Node*>& changed);
  Task<void> co_close_node(Node* node);
  Task<void> co_close_node_once(Node* node);
  bool closing(const Node* node) const { return closing_.count(node) > 0; }
  void unlink_parent(Child* edge);
  // True if `to` is below `from`.
  static bool reaches(const Node& from, const Node& to);

  Engine& engine_;
  DriverRegistry drivers_;
  CredentialStore credentials_;
  std::map<std::string, std::unique_ptr<Node>, std::less<>> nodes_;
  std::vector<Node*> order_;  // creation order
  std::list<std::unique_ptr<Child>> roots_;
  uint64_t implicit_counter_ = 0;
  // Nodes whose close has started and not finished (it suspends while the
  // node drains and flushes); `closed_` wakes whoever waits for one.
  std::set<const Node*> closing_;
  CoQueue closed_;
};

}  // namespace strata
