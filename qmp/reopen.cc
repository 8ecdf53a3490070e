// blockdev-reopen: changes the options of existing nodes, all or nothing.
//
// Each entry gives the complete options of one node; omitted common
// options return to their defaults (for implicit children: to what they
// inherit from their parent). Changeable: read-only (both ways, with the
// permission update and image locks that follow), auto-read-only,
// force-share, cache (direct and no-flush), discard, detect-zeroes, and
// `backing` (null to detach, the current child, or another node by name).
// Implicit children not named in an entry are reopened with the flags they
// inherit; an implicit child may also be given inline. Driver options and
// other children must stay as they are ("Cannot change the option 'x'").
//
// Phases, as QEMU's reopen queue: plan every node (validation), drain the
// nodes and their parents, let each driver prepare (a file opened again,
// say), switch the flags and links as one graph change (one permission
// update), then commit every driver and let each finish (qcow2 marks its
// bitmaps in-use once its file is writable); any failure aborts the
// drivers and undoes the graph change. Frozen links (a job's chain)
// cannot change.
#include "block/core/graph_change.h"
#include "qmp/commands.h"
#include "qmp/context.h"

namespace strata::qmp {

namespace {

const std::vector<std::string>& common_keys() {
  static const std::vector<std::string> keys = {"driver",         "node-name",     "read-only",
                                                "auto-read-only", "force-share",   "cache",
                                                "discard",        "detect-zeroes", "active"};
  return keys;
}

bool is_common(const std::string& key) {
  for (const auto& k : common_keys()) {
    if (k == key) return true;
  }
  return false;
}

// A `file` or `backing` child pointed at another node (null: detach).
struct LinkChange {
  std::string child;
  Node* to = nullptr;
};

struct Plan {
  Node* node = nullptr;
  NodeFlags flags;
  json options;
  bool keep_options = false;  // an inherited-only plan keeps the old options
  std::vector<LinkChange> links;
};

// The defaults an entry starts from: QEMU's, or for an implicit child what
// it inherits from its parent's new flags.
NodeFlags base_flags(const NodeFlags* inherited, const Child* edge) {
  NodeFlags f;
  if (inherited) {
    f.read_only = inherited->read_only;
    f.auto_read_only = inherited->auto_read_only;
    f.force_share = inherited->force_share;
    f.cache_direct = inherited->cache_direct;
    f.cache_no_flush = inherited->cache_no_flush;
    f.discard_unmap = inherited->discard_unmap;
  }
  if (edge && (edge->role() & kRoleCow)) f.read_only = true;
  return f;
}

Result<DetectZeroes> detect_zeroes_of(const std::string& dz) {
  if (dz == "on") return DetectZeroes::kOn;
  if (dz == "unmap") return DetectZeroes::kUnmap;
  return DetectZeroes::kOff;
}

// force-share cannot change in QEMU: an entry repeats the value the node
// was opened with, or omits it if it was never given.
Result<void> check_force_share(const Node& node, const json& o) {
  const json& old = node.options();
  if (o.contains("force-share")) {
    if (!old.contains("force-share") || old["force-share"] != o["force-share"]) {
      return Error{EINVAL, "Cannot change the option 'force-share'"};
    }
  } else if (!o.empty() && old.contains("force-share")) {
    return Error{EINVAL, "Option 'force-share' cannot be reset to its default value"};
  }
  return {};
}

// `discard` keeps its value unless given (QEMU keeps the open flag).
Result<NodeFlags> new_flags(const Node& node, const json& o, NodeFlags f) {
  f.read_only = o.value("read-only", f.read_only);
  f.auto_read_only = o.value("auto-read-only", f.auto_read_only);
  f.force_share = node.flags().force_share;
  f.discard_unmap = node.flags().discard_unmap;
  if (o.contains("discard")) f.discard_unmap = o["discard"] == "unmap";
  STRATA_TRY_ASSIGN(f.detect_zeroes, detect_zeroes_of(o.value("detect-zeroes", "off")));
  if (auto c = o.find("cache"); c != o.end()) {
    f.cache_direct = c->value("direct", f.cache_direct);
    f.cache_no_flush = c->value("no-flush", f.cache_no_flush);
  }
  if (f.detect_zeroes == DetectZeroes::kUnmap && !f.discard_unmap) {
    return Error{EINVAL,
                 "setting detect-zeroes to unmap is not allowed without setting discard "
                 "operation to unmap"};
  }
  if (f.force_share && !f.read_only) {
    return Error{EINVAL, "force-share=on can only be used with read-only images"};
  }
  return f;
}

bool is_implicit_child(const Child& c) {
  return !c.node()->monitor_owned() && c.node()->parents().size() == 1;
}

class Planner {
 public:
  explicit Planner(const Graph& graph) : graph_(graph) {}

  // A node named twice takes its last entry, as in QEMU's reopen queue.
  Result<void> add_entry(const json& o) {
    std::string name = o.value("node-name", "");
    if (name.empty()) return Error{EINVAL, "node-name not specified"};
    Node* node = graph_.find(name);
    if (!node) return Error{ENOENT, "Failed to find node with node-name='" + name + "'"};
    for (auto& e : entries_) {
      if (e.first == node) {
        e.second = o;
        return {};
      }
    }
    entries_.emplace_back(node, o);
    return {};
  }

  Result<std::vector<Plan>> take() {
    for (auto& [node, o] : entries_) STRATA_TRY(add(*node, o, nullptr, nullptr));
    return std::move(plans_);
  }

 private:
  Result<void> add(Node& node, const json& o, const NodeFlags* inherited, const Child* edge) {
    for (const auto& p : plans_) {
      if (p.node == &node) {
        return Error{EINVAL, "Node '" + node.name() + "' is already in the reopen queue"};
      }
    }
    if (o.contains("driver") && o["driver"] != node.driver_name()) {
      return Error{EINVAL, "Cannot change the option 'driver'"};
    }
    if (o.contains("node-name") && o["node-name"] != node.name()) {
      return Error{EINVAL, "Cannot change the option 'node-name'"};
    }
    Plan plan;
    plan.node = &node;
    STRATA_TRY(check_force_share(node, o));
    STRATA_TRY_ASSIGN(plan.flags, new_flags(node, o, base_flags(inherited, edge)));
    plan.options = o;
    plan.keep_options = o.empty();
    size_t index = plans_.size();
    plans_.push_back(plan);
    STRATA_TRY(check_driver_options(index, o));
    return add_implicit_children(node, o, plans_[index].flags);
  }

  Result<void> check_driver_options(size_t index, const json& o) {
    if (o.empty()) return {};  // inherited only: nothing else changes
    Plan& plan = plans_[index];
    Node& node = *plan.node;
    const json& old = node.options();
    if (!o.contains("backing") && node.driver().supports_backing() && node.backing()) {
      return Error{EINVAL, "backing is missing for '" + node.name() + "'"};
    }
    for (auto it = o.begin(); it != o.end(); ++it) {
      const std::string& key = it.key();
      if (is_common(key)) continue;
      if (key == "backing" || key == "file") {
        STRATA_TRY(plan_link(plan, key, *it));
      } else if (Child* c = node.child(key)) {
        if (!same_child(c, *it)) return Error{EINVAL, "Cannot change the option '" + key + "'"};
      } else if (!old.contains(key) || old[key] != *it) {
        return Error{EINVAL, "Cannot change the option '" + key + "'"};
      }
    }
    for (auto it = old.begin(); it != old.end(); ++it) {
      if (!is_common(it.key()) && !o.contains(it.key()) && !node.child(it.key())) {
        return Error{EINVAL, "Option '" + it.key() + "' cannot be reset to its default value"};
      }
    }
    return {};
  }

  // Implicit children follow their parent: given inline, or inherited.
  Result<void> add_implicit_children(Node& node, const json& o, NodeFlags parent_flags) {
    std::vector<std::pair<Child*, json>> todo;
    for (const auto& c : node.children()) {
      if (!is_implicit_child(*c)) continue;
      auto it = o.find(c->name());
      json child_options = json::object();
      if (it != o.end() && it->is_object()) child_options = *it;
      if (it != o.end() && !it->is_object()) continue;  // named: already checked
      todo.emplace_back(c.get(), std::move(child_options));
    }
    for (auto& [c, child_options] : todo) {
      STRATA_TRY(add(*c->node(), child_options, &parent_flags, c));
    }
    return {};
  }

  // A child option may name the current child or repeat its options.
  static bool same_child(const Child* current, const json& v) {
    if (!current) return false;
    if (v.is_string()) return v.get<std::string>() == current->node()->name();
    if (!v.is_object()) return false;
    if (v.contains("node-name")) return v["node-name"] == current->node()->name();
    return is_implicit_child(*current);  // inline options of the implicit child
  }

  static bool reaches(const Node& from, const Node& to) {
    if (&from == &to) return true;
    for (const auto& c : from.children()) {
      if (reaches(*c->node(), to)) return true;
    }
    return false;
  }

  // `file` or `backing`: the current child, null (backing only: detach) or
  // another node by name.
  Result<void> plan_link(Plan& plan, const std::string& key, const json& v) {
    Child* current = plan.node->child(key);
    if (v.is_null()) {
      if (key == "file") return Error{EINVAL, "Cannot change the option 'file'"};
      if (current) plan.links.push_back({key, nullptr});
      return {};
    }
    if (same_child(current, v)) return {};
    if (!v.is_string()) return Error{EINVAL, "Cannot change the option '" + key + "'"};
    Node* target = graph_.find(v.get<std::string>());
    if (!target) {
      return Error{ENOENT, "Cannot find device='' nor node-name='" + v.get<std::string>() + "'"};
    }
    if (key == "backing" && !plan.node->driver().supports_backing()) {
      return Error{EINVAL,
                   "Driver '" + plan.node->driver_name() + "' does not support backing files"};
    }
    if (key == "file" && !current) return Error{EINVAL, "Cannot change the option 'file'"};
    if (reaches(*target, *plan.node)) {
      return Error{EINVAL, "Making '" + target->name() + "' a " + key + " child of '" +
                               plan.node->name() + "' would create a cycle"};
    }
    plan.links.push_back({key, target});
    return {};
  }

  const Graph& graph_;
  std::vector<std::pair<Node*, json>> entries_;
  std::vector<Plan> plans_;
};

// Drivers prepare in order, up to the first failure; `prepared` counts the
// ones that succeeded (they are committed or aborted later).
Task<Result<void>> co_prepare_drivers(std::vector<Plan>& plans, size_t& prepared) {
  for (prepared = 0; prepared < plans.size(); prepared++) {
    auto r = co_await plans[prepared].node->driver().co_reopen_prepare(plans[prepared].flags);
    if (!r) co_return std::move(r).error();
  }
  co_return Result<void>{};
}

// Commit or abort every prepared driver, then let each finish with the new
// (or old) files and permissions in place.
Task<void> co_end_drivers(std::vector<Plan>& plans, size_t prepared, bool committed) {
  for (size_t i = 0; i < prepared; i++) {
    if (committed) {
      plans[i].node->driver().reopen_commit();
    } else {
      plans[i].node->driver().reopen_abort();
    }
  }
  for (size_t i = 0; i < prepared; i++) {
    co_await plans[i].node->driver().co_reopen_finish(committed);
  }
}

// New flags and links as one graph change: one permission update for all,
// everything undone if it fails.
Result<void> co_switch_plan(GraphChange& change, std::vector<Plan>& plans) {
  for (auto& p : plans) change.set_flags(*p.node, p.flags);
  for (auto& p : plans) {
    for (auto& l : p.links) {
      Child* current = p.node->child(l.child);
      if (!l.to) {
        STRATA_TRY(change.detach(*current));
      } else if (current) {
        STRATA_TRY(change.retarget(*current, *l.to));
      } else {
        STRATA_TRY(change.attach(*p.node, *l.to, l.child, kRoleCow));
      }
    }
  }
  return change.commit();
}

Task<Result<json>> co_blockdev_reopen(QmpContext& ctx, json args) {
  Graph& graph = ctx.engine().graph();
  Planner planner(graph);
  for (const auto& o : args["options"]) STRATA_CO_TRY(planner.add_entry(o));
  STRATA_CO_TRY_ASSIGN(std::vector<Plan> plans, planner.take());
  GraphChange change(graph);
  std::vector<Node*> nodes;
  for (auto& p : plans) nodes.push_back(p.node);
  co_await change.co_drain(std::move(nodes));
  size_t prepared = 0;
  auto r = co_await co_prepare_drivers(plans, prepared);
  if (r) r = co_switch_plan(change, plans);
  if (!r) change.abort();
  co_await co_end_drivers(plans, prepared, bool(r));
  co_await change.co_finish();
  if (!r) co_return std::move(r).error();
  for (auto& p : plans) {
    if (!p.keep_options) p.node->set_options(p.options);
  }
  co_return json::object();
}

}  // namespace

void register_reopen_command(QmpContext& ctx) {
  ctx.registry().add({.name = "blockdev-reopen",
                      .args = {{"options", "[BlockdevOptions]"}},
                      .handler = co_blockdev_reopen});
}

}  // namespace strata::qmp
