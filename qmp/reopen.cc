// blockdev-reopen: changes the common options of existing nodes atomically.
//
// Supported: read-only (read-write to read-only), detect-zeroes, discard,
// force-share, auto-read-only, and `backing` (null to detach, the current
// child, or another node by name). The driver options and the other
// children must be given unchanged. Making a read-only node writable needs
// the drivers to reopen their files and is refused (docs/qmp.md).
#include "block/core/graph.h"
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

struct Plan {
  Node* node = nullptr;
  NodeFlags flags;
  json options;
  bool change_backing = false;
  Node* new_backing = nullptr;  // with change_backing: null detaches
};

Result<NodeFlags> new_flags(const Node& node, const json& o) {
  NodeFlags f = node.flags();
  f.read_only = o.value("read-only", false);
  f.auto_read_only = o.value("auto-read-only", false);
  f.force_share = o.value("force-share", false);
  f.discard_unmap = o.value("discard", "ignore") == "unmap";
  std::string dz = o.value("detect-zeroes", "off");
  f.detect_zeroes = dz == "on"      ? DetectZeroes::kOn
                    : dz == "unmap" ? DetectZeroes::kUnmap
                                    : DetectZeroes::kOff;
  if (f.detect_zeroes == DetectZeroes::kUnmap && !f.discard_unmap) {
    return Error{EINVAL,
                 "setting detect-zeroes to unmap is not allowed without setting discard "
                 "operation to unmap"};
  }
  if (f.force_share && !f.read_only) {
    return Error{EINVAL, "force-share=on can only be used with read-only images"};
  }
  if (auto c = o.find("cache"); c != o.end()) {
    if (c->value("direct", false) != f.cache_direct) {
      return Error{EINVAL, "Cannot change the option 'cache.direct'"};
    }
    f.cache_no_flush = c->value("no-flush", false);
  }
  if (node.read_only() && !f.read_only) {
    return Error{ENOTSUP, "Cannot make node '" + node.name() +
                              "' writable: reopening read-write is not supported yet"};
  }
  return f;
}

// A child option may name the current child or repeat its options.
bool same_child(const Child* current, const json& v) {
  if (!current) return false;
  if (v.is_string()) return v.get<std::string>() == current->node()->name();
  return v.is_object() && v.value("node-name", "") == current->node()->name();
}

Result<void> plan_backing(const Graph& graph, Plan& plan, const json& v) {
  Child* current = plan.node->backing();
  if (v.is_null()) {
    plan.change_backing = current != nullptr;
    return {};
  }
  if (same_child(current, v)) return {};
  if (!v.is_string()) return Error{EINVAL, "Cannot change the option 'backing'"};
  Node* target = graph.find(v.get<std::string>());
  if (!target) {
    return Error{ENOENT, "Cannot find device='' nor node-name='" + v.get<std::string>() + "'"};
  }
  if (!plan.node->driver().supports_backing()) {
    return Error{EINVAL,
                 "Driver '" + plan.node->driver_name() + "' does not support backing files"};
  }
  plan.change_backing = true;
  plan.new_backing = target;
  return {};
}

Result<Plan> make_plan(const Graph& graph, const json& o) {
  Plan plan;
  std::string name = o.value("node-name", "");
  if (name.empty()) return Error{EINVAL, "node-name not specified"};
  plan.node = graph.find(name);
  if (!plan.node) return Error{ENOENT, "Failed to find node with node-name='" + name + "'"};
  if (o["driver"].get<std::string>() != plan.node->driver_name()) {
    return Error{EINVAL, "Cannot change the option 'driver'"};
  }
  STRATA_TRY_ASSIGN(plan.flags, new_flags(*plan.node, o));
  const json& old = plan.node->options();
  for (auto it = o.begin(); it != o.end(); ++it) {
    const std::string& key = it.key();
    if (is_common(key)) continue;
    if (key == "backing") {
      STRATA_TRY(plan_backing(graph, plan, *it));
    } else if (Child* c = plan.node->child(key)) {
      if (!same_child(c, *it)) return Error{EINVAL, "Cannot change the option '" + key + "'"};
    } else if (!old.contains(key) || old[key] != *it) {
      return Error{EINVAL, "Cannot change the option '" + key + "'"};
    }
  }
  for (auto it = old.begin(); it != old.end(); ++it) {
    if (!is_common(it.key()) && !o.contains(it.key()) && !plan.node->child(it.key())) {
      return Error{EINVAL, "Cannot change the option '" + it.key() + "'"};
    }
  }
  plan.options = o;
  return plan;
}

Task<Result<void>> co_apply_backing(Graph& graph, Plan& plan) {
  if (!plan.change_backing) co_return Result<void>{};
  Child* current = plan.node->backing();
  if (plan.new_backing && current) co_return graph.retarget(*current, *plan.new_backing);
  if (plan.new_backing) {
    auto edge = graph.attach_child(*plan.node, *plan.new_backing, "backing", kRoleCow);
    if (!edge) co_return std::move(edge).error();
    co_return Result<void>{};
  }
  co_await graph.co_detach(current);
  co_return Result<void>{};
}

Task<Result<json>> co_blockdev_reopen(QmpContext& ctx, json args) {
  Graph& graph = ctx.engine().graph();
  std::vector<Plan> plans;
  for (const auto& o : args["options"]) {
    auto plan = make_plan(graph, o);
    if (!plan) co_return std::move(plan).error();
    plans.push_back(std::move(*plan));
  }
  // Flags first, all or nothing; then backing changes (which check
  // permissions themselves).
  std::vector<NodeFlags> saved;
  for (auto& p : plans) {
    saved.push_back(p.node->flags());
    p.node->mutable_flags() = p.flags;
  }
  Result<void> r;
  for (auto& p : plans) {
    r = graph.refresh_node_perms(*p.node);
    if (!r) break;
  }
  for (size_t i = 0; r && i < plans.size(); i++) r = co_await co_apply_backing(graph, plans[i]);
  if (!r) {
    for (size_t i = 0; i < plans.size(); i++) plans[i].node->mutable_flags() = saved[i];
    for (auto& p : plans) (void)graph.refresh_node_perms(*p.node);
    co_return std::move(r).error();
  }
  for (auto& p : plans) p.node->set_options(p.options);
  co_return json::object();
}

}  // namespace

void register_reopen_command(QmpContext& ctx) {
  ctx.registry().add({.name = "blockdev-reopen",
                      .args = {{"options", "[BlockdevOptions]"}},
                      .handler = co_blockdev_reopen});
}

}  // namespace strata::qmp
