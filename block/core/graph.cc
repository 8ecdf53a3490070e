// Opening nodes from options, edges, replace and delete.
#include "block/core/graph.h"

#include <algorithm>
#include <cctype>
#include <set>

#include "base/log.h"
#include "block/filters/throttle_group.h"
#include "strata/engine.h"

namespace strata {

using nlohmann::json;

namespace {
// Options every node accepts (QEMU's BlockdevOptions base).
const std::vector<OptionSpec>& common_option_specs() {
  static const std::vector<OptionSpec> specs = {
      {"driver", OptType::kString, true},   {"node-name", OptType::kString},
      {"read-only", OptType::kBool},        {"auto-read-only", OptType::kBool},
      {"force-share", OptType::kBool},      {"cache", OptType::kObject},
      {"discard", OptType::kString},        {"detect-zeroes", OptType::kString},
      {"active", OptType::kBool},
  };
  return specs;
}
}  // namespace

Loop& OpenContext::loop() const { return graph_.engine().loop(); }

Task<Result<Child*>> OpenContext::co_open_child(const std::string& key, uint32_t role,
                                                bool required) {
  auto it = options_.find(key);
  if (it == options_.end() || it->is_null()) {
    if (required) co_return Error{EINVAL, "Parameter '" + key + "' is missing"};
    co_return static_cast<Child*>(nullptr);
  }
  if (it->is_string()) {
    std::string ref = it->get<std::string>();
    Node* existing = graph_.find(ref);
    if (!existing) {
      co_return Error{ENOENT, "Cannot find device='' nor node-name='" + ref + "'"};
    }
    co_return graph_.attach_child(node_, *existing, key, role);
  }
  co_return co_await co_open_child_with(key, *it, role);
}

Task<Result<Child*>> OpenContext::co_open_child_with(const std::string& key, json child_options,
                                                     uint32_t role) {
  auto child = co_await graph_.co_add_child_node(node_, key, std::move(child_options), role);
  if (!child) co_return std::move(child).error();
  auto edge = graph_.attach_child(node_, **child, key, role);
  if (!edge) co_await graph_.co_release_if_unused(*child);
  co_return edge;
}

Graph::Graph(Engine& engine)
    : engine_(engine),
      throttle_groups_(std::make_unique<ThrottleGroups>(engine.loop())),
      closed_(engine.loop()) {
  register_builtin_drivers(drivers_);
}

Graph::~Graph() {
  // Nodes must have been closed (co_close_all); drop what is left without I/O.
  roots_.clear();
  for (Node* n : order_) {
    for (auto& c : n->children_) c.reset();
  }
  nodes_.clear();
}

Result<void> Graph::check_node_name(const std::string& name) {
  bool ok = !name.empty() && std::isalpha(static_cast<unsigned char>(name[0]));
  for (char ch : name) {
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-' && ch != '.' && ch != '_') {
      ok = false;
    }
  }
  if (!ok) return Error{EINVAL, "Invalid node-name: '" + name + "'"};
  if (name.size() > 31) return Error{EINVAL, "Node name too long"};
  return {};
}

std::string Graph::next_implicit_name() {
  std::string name;
  do {
    name = "#block" + std::to_string(implicit_counter_++);
  } while (nodes_.count(name));
  return name;
}

Node* Graph::find(std::string_view name) const {
  auto it = nodes_.find(name);
  return it == nodes_.end() ? nullptr : it->second.get();
}

std::vector<Node*> Graph::nodes() const { return order_; }

std::vector<Node*> Graph::named_nodes() const {
  std::vector<Node*> out;
  for (Node* n : order_) {
    if (!n->implicit()) out.push_back(n);
  }
  return out;
}

Result<NodeFlags> Graph::parse_common(json& options, const NodeFlags* inherited, uint32_t role) {
  NodeFlags f;
  if (inherited) {
    // Children inherit these unless they set them (as QEMU's children do).
    f.read_only = inherited->read_only;
    f.auto_read_only = inherited->auto_read_only;
    f.force_share = inherited->force_share;
    f.cache_direct = inherited->cache_direct;
    f.cache_no_flush = inherited->cache_no_flush;
    f.discard_unmap = inherited->discard_unmap;
  }
  if (role & kRoleCow) f.read_only = true;  // backing files open read-only
  f.read_only = opt_bool(options, "read-only", f.read_only);
  f.auto_read_only = opt_bool(options, "auto-read-only", f.auto_read_only);
  f.force_share = opt_bool(options, "force-share", f.force_share);
  if (auto it = options.find("cache"); it != options.end()) {
    static const std::vector<OptionSpec> cache_spec = {{"direct", OptType::kBool},
                                                       {"no-flush", OptType::kBool}};
    STRATA_TRY(validate_options(*it, cache_spec, "cache."));
    f.cache_direct = opt_bool(*it, "direct", f.cache_direct);
    f.cache_no_flush = opt_bool(*it, "no-flush", f.cache_no_flush);
  }
  if (auto it = options.find("discard"); it != options.end()) {
    std::string d = it->get<std::string>();
    if (d == "unmap" || d == "on") {
      f.discard_unmap = true;
    } else if (d == "ignore" || d == "off") {
      f.discard_unmap = false;
    } else {
      return Error{EINVAL, "Parameter 'discard' does not accept value '" + d + "'"};
    }
  }
  if (auto it = options.find("detect-zeroes"); it != options.end()) {
    std::string d = it->get<std::string>();
    if (d == "off") {
      f.detect_zeroes = DetectZeroes::kOff;
    } else if (d == "on") {
      f.detect_zeroes = DetectZeroes::kOn;
    } else if (d == "unmap") {
      f.detect_zeroes = DetectZeroes::kUnmap;
    } else {
      return Error{EINVAL, "Parameter 'detect-zeroes' does not accept value '" + d + "'"};
    }
    if (f.detect_zeroes == DetectZeroes::kUnmap && !f.discard_unmap) {
      return Error{EINVAL, "setting detect-zeroes to unmap is not allowed without setting discard "
                           "operation to unmap"};
    }
  }
  if (f.force_share && !f.read_only) {
    return Error{EINVAL, "force-share=on can only be used with read-only images"};
  }
  return f;
}

Task<Result<Node*>> Graph::co_add(json options, bool implicit) {
  co_return co_await co_open_node(std::move(options), implicit, nullptr, 0);
}

Task<Result<Node*>> Graph::co_add_internal(json options) {
  co_return co_await co_open_node(std::move(options), true, nullptr, 0, true);
}

Task<Result<Node*>> Graph::co_add_child_node(Node& parent, const std::string& key, json options,
                                             uint32_t role) {
  if (!options.is_object()) {
    co_return Error{EINVAL, "Invalid parameter type for '" + key + "', expected: object"};
  }
  co_return co_await co_open_node(std::move(options), true, &parent.flags(), role);
}

Task<Result<Node*>> Graph::co_open_node(json options, bool implicit, const NodeFlags* inherited,
                                        uint32_t role, bool allow_internal) {
  if (!options.is_object()) co_return Error{EINVAL, "Invalid parameter type, expected: object"};
  auto dit = options.find("driver");
  if (dit == options.end()) co_return Error{EINVAL, "Parameter 'driver' is missing"};
  if (!dit->is_string()) {
    co_return Error{EINVAL, "Invalid parameter type for 'driver', expected: string"};
  }
  std::string driver_name = dit->get<std::string>();
  const DriverSpec* spec = drivers_.find(driver_name);
  if (!spec || (spec->internal && !allow_internal)) {
    co_return Error{EINVAL, "Parameter 'driver' does not accept value '" + driver_name + "'"};
  }
  std::vector<OptionSpec> all = common_option_specs();
  all.insert(all.end(), spec->options.begin(), spec->options.end());
  STRATA_CO_TRY(validate_options(options, all));

  std::string name = opt_string(options, "node-name");
  bool auto_named = name.empty();
  if (auto_named) {
    if (!implicit) co_return Error{EINVAL, "'node-name' must be specified for the root node"};
    name = next_implicit_name();
  } else {
    STRATA_CO_TRY(check_node_name(name));
    if (nodes_.count(name)) {
      co_return Error{EEXIST, "Duplicate nodes with node-name='" + name + "'"};
    }
  }
  STRATA_CO_TRY_ASSIGN(NodeFlags flags, parse_common(options, inherited, role));

  json driver_options = options;
  for (const auto& c : common_option_specs()) driver_options.erase(c.name);

  auto owned = std::make_unique<Node>(engine_, name, auto_named, driver_name, spec->create(), flags);
  Node* node = owned.get();
  node->set_options(options);
  node->set_monitor_owned(!implicit);
  nodes_.emplace(name, std::move(owned));
  order_.push_back(node);

  OpenContext ctx(*this, *node, std::move(driver_options));
  auto opened = co_await node->driver().co_open(ctx);
  if (!opened) {
    // Undo: release the children the driver opened, then forget the node.
    while (!node->children_.empty()) co_await co_detach(node->children_.back().get());
    std::erase(order_, node);
    nodes_.erase(name);
    co_return std::move(opened).error();
  }
  co_return node;
}

bool Graph::reaches(const Node& from, const Node& to) {
  for (const auto& c : from.children_) {
    if (c->node_ == &to || reaches(*c->node_, to)) return true;
  }
  return false;
}

void Graph::unlink_parent(Child* edge) { std::erase(edge->node_->parents_, edge); }

Result<Child*> Graph::attach_child(Node& parent, Node& child, const std::string& name,
                                   uint32_t role) {
  if (&parent == &child || reaches(child, parent)) {
    return Error{EINVAL, "Making '" + child.name() + "' a child of '" + parent.name() +
                             "' would create a cycle"};
  }
  auto edge = std::make_unique<Child>(&parent, "node '" + parent.name() + "'", name, role, &child);
  Child* raw = edge.get();
  parent.children_.push_back(std::move(edge));
  child.parents_.push_back(raw);
  if (auto r = refresh_perms({&parent, &child}); !r) {
    unlink_parent(raw);
    parent.children_.pop_back();
    return std::move(r).error();
  }
  return raw;
}

Result<Child*> Graph::attach_root(Node& node, const std::string& user, uint64_t perm,
                                  uint64_t shared, RootOptions options) {
  auto edge = std::make_unique<Child>(nullptr, user, "root", kRolePrimary, &node);
  edge->perm_ = perm;
  edge->shared_ = shared;
  edge->backend_ = options.backend;
  edge->stay_at_node_ = options.stays_at_node;
  edge->set_owner(options.owner, options.waits_while_drained);
  Child* raw = edge.get();
  roots_.push_back(std::move(edge));
  node.parents_.push_back(raw);
  if (auto r = refresh_perms({&node}); !r) {
    unlink_parent(raw);
    roots_.pop_back();
    return std::move(r).error();
  }
  if (options.owner && node.quiesced()) options.owner->drained_begin();
  return raw;
}

void Graph::move_edge(Child* edge, Node* to) {
  Node* from = edge->node_;
  unlink_parent(edge);
  edge->node_ = to;
  to->parents_.push_back(edge);
  // Requests waiting at the edge for `from`'s drain look again: they now
  // wait for `to`, or go on.
  from->unquiesced_.wake_all();
  EdgeOwner* owner = edge->owner();
  if (!owner || from->quiesced() == to->quiesced()) return;
  if (to->quiesced()) {
    owner->drained_begin();
  } else {
    owner->drained_end();
    from->kick_drain();
  }
}

Result<void> Graph::set_root_perm(Child& root, uint64_t perm, uint64_t shared) {
  uint64_t old_perm = root.perm_, old_shared = root.shared_;
  root.perm_ = perm;
  root.shared_ = shared;
  if (auto r = refresh_perms({root.node_}); !r) {
    root.perm_ = old_perm;
    root.shared_ = old_shared;
    return r;
  }
  return {};
}

Result<void> Graph::retarget(Child& edge, Node& to) {
  Node* from = edge.node_;
  if (from == &to) return {};
  if (edge.frozen()) {
    return Error{EPERM, "Cannot change frozen '" + edge.name() + "' link from '" +
                            (edge.parent_ ? edge.parent_->name() : edge.user()) + "' to '" +
                            from->name() + "'"};
  }
  move_edge(&edge, &to);
  std::vector<Node*> changed = {from, &to};
  if (edge.parent_) changed.push_back(edge.parent_);
  if (auto r = refresh_perms(changed); !r) {
    move_edge(&edge, from);
    (void)refresh_perms({from, &to});
    return r;
  }
  return {};
}

Task<void> Graph::co_detach(Child* edge) {
  Node* node = edge->node_;
  unlink_parent(edge);
  if (edge->owner() && node->quiesced()) {
    edge->owner()->drained_end();
    node->kick_drain();
  }
  if (edge->parent_) {
    auto& kids = edge->parent_->children_;
    std::erase_if(kids, [edge](const auto& c) { return c.get() == edge; });
  } else {
    roots_.remove_if([edge](const auto& c) { return c.get() == edge; });
  }
  (void)refresh_perms({node});  // loosening cannot conflict
  co_await co_release_if_unused(node);
}

Task<void> Graph::co_release_if_unused(Node* node) {
  if (node->parents_.empty() && !node->monitor_owned()) co_await co_close_node(node);
}

// A node is closed once: a second caller (a background detach racing a
// shutdown, two parents let go of one child) waits for the first close to
// finish instead of closing a node that is about to be freed.
Task<void> Graph::co_close_node(Node* node) {
  if (closing(node)) {
    while (closing(node)) co_await closed_.wait();
    co_return;
  }
  closing_.insert(node);
  co_await co_close_node_once(node);
  closing_.erase(node);
  closed_.wake_all();
}

Task<void> Graph::co_close_node_once(Node* node) {
  co_await node->co_drain_begin();
  for (DrainSection* s : sections_) std::erase(s->nodes_, node);
  if (!node->read_only()) {
    auto r = co_await node->co_flush(nullptr);
    if (!r) engine_.logger().error("flush of node '" + node->name() + "' failed: " + r.error().message);
  }
  co_await node->driver().co_close();
  while (!node->children_.empty()) co_await co_detach(node->children_.back().get());
  std::erase(order_, node);
  auto it = nodes_.find(node->name());
  if (it != nodes_.end()) nodes_.erase(it);
}

Task<Result<void>> Graph::co_del(const std::string& name) {
  Node* node = find(name);
  if (!node) co_return Error{ENOENT, "Failed to find node with node-name='" + name + "'"};
  if (!node->monitor_owned()) {
    co_return Error{EINVAL, "Node " + name + " is not owned by the monitor"};
  }
  if (!node->parents_.empty()) co_return Error{EBUSY, "Node " + name + " is in use"};
  co_await co_close_node(node);
  co_return Result<void>{};
}

Task<void> Graph::co_close_all() {
  while (!roots_.empty()) co_await co_detach(roots_.front().get());
  // Close from the top: a node whose parents are gone first. Nodes whose
  // close is under way are waited for, not closed again.
  for (;;) {
    Node* top = nullptr;
    for (Node* n : order_) {
      if (n->parents_.empty() && !closing(n)) {
        top = n;
        break;
      }
    }
    if (top) {
      top->set_monitor_owned(false);
      co_await co_close_node(top);
    } else if (!closing_.empty()) {
      co_await closed_.wait();
    } else {
      break;
    }
  }
}

}  // namespace strata
