// Block graph commands: blockdev-add, blockdev-del, blockdev-reopen,
// query-named-block-nodes, query-block, query-blockstats, block_resize.
#include "block/core/graph.h"
#include "qmp/block_info.h"
#include "qmp/block_lookup.h"
#include "qmp/block_schema.h"
#include "qmp/commands.h"
#include "qmp/context.h"

namespace strata::qmp {

namespace {

Task<Result<json>> co_blockdev_add(QmpContext& ctx, json args) {
  auto node = co_await ctx.engine().graph().co_add(std::move(args));
  if (!node) co_return std::move(node).error();
  co_return json::object();
}

// QEMU's checks, in its order: a backend user (export, device, a job's main
// node), an operation blocker (a job's other nodes, a backing edge),
// monitor ownership, then any other parent.
Result<void> check_deletable(const Node& node) {
  const std::string& name = node.name();
  for (const Child* p : node.parents()) {
    if (p->is_root() && p->backend()) return Error{EBUSY, "Node " + name + " is in use"};
  }
  STRATA_TRY(node.check_op(BlockOp::kDriveDel));
  STRATA_TRY(check_not_backing(node));
  if (!node.monitor_owned()) return Error{EINVAL, "Node " + name + " is not owned by the monitor"};
  if (!node.parents().empty()) return Error{EBUSY, "Block device " + name + " is in use"};
  return {};
}

Task<Result<json>> co_blockdev_del(QmpContext& ctx, json args) {
  std::string name = args["node-name"].get<std::string>();
  Graph& graph = ctx.engine().graph();
  Node* node = graph.find(name);
  if (!node) co_return Error{ENOENT, "Failed to find node with node-name='" + name + "'"};
  STRATA_CO_TRY(check_deletable(*node));
  STRATA_CO_TRY(co_await graph.co_del(name));
  co_return json::object();
}

Task<Result<json>> co_query_named_block_nodes(QmpContext& ctx, json args) {
  bool flat = args.value("flat", false);
  Graph& graph = ctx.engine().graph();
  std::vector<std::string> files = files_of(graph);
  // Captured by reference: GCC 12 mishandles non-trivial captures here.
  AllocatedSizes sizes =
      co_await ctx.engine().loop().offload([&files] { return allocated_sizes(files); });
  const auto& extenders = ctx.service<BlockInfoExtensions>().extenders;
  json out = json::array();
  // Newest first, as QEMU lists its node list.
  std::vector<Node*> nodes = graph.nodes();
  for (auto it = nodes.rbegin(); it != nodes.rend(); ++it) {
    out.push_back(block_device_info(**it, sizes, flat, extenders));
  }
  co_return out;
}

Task<Result<json>> co_query_block(QmpContext&, json) {
  // QEMU lists BlockBackends only; a storage daemon has none (nodes are
  // used by exports and jobs), so the list is empty, as in
  // qemu-storage-daemon.
  co_return json::array();
}

Task<Result<json>> co_query_blockstats(QmpContext& ctx, json args) {
  json out = json::array();
  if (!args.value("query-nodes", false)) co_return out;
  std::vector<Node*> nodes = ctx.engine().graph().nodes();
  for (auto it = nodes.rbegin(); it != nodes.rend(); ++it) {
    out.push_back(block_stats(**it, false));
  }
  co_return out;
}

Task<Result<json>> co_block_resize(QmpContext& ctx, json args) {
  STRATA_CO_TRY_ASSIGN(Node * node, lookup_device_or_node(ctx.engine().graph(), args));
  int64_t size = args["size"].get<int64_t>();
  if (size < 0) co_return Error{EINVAL, "Parameter 'size' expects a >0 size"};
  if (node->read_only()) co_return Error{EACCES, "Block node is read-only"};
  Graph& graph = ctx.engine().graph();
  STRATA_CO_TRY_ASSIGN(Child * user,
                       graph.attach_root(*node, "block_resize", kPermResize, kPermAll));
  auto r = co_await user->co_truncate(static_cast<uint64_t>(size), false, Preallocation::kOff);
  co_await graph.co_detach(user);
  if (!r) co_return std::move(r).error();
  co_return json::object();
}

}  // namespace

void register_block_commands(QmpContext& ctx) {
  CommandRegistry& r = ctx.registry();
  add_block_types(r.schema(), ctx.engine().graph().drivers());
  r.add({.name = "blockdev-add", .boxed = "BlockdevOptions", .handler = co_blockdev_add});
  r.add({.name = "blockdev-del", .args = {{"node-name", "str"}}, .handler = co_blockdev_del});
  r.add({.name = "query-named-block-nodes",
         .args = {{"flat", "bool", true}},
         .returns = "[BlockDeviceInfo]",
         .handler = co_query_named_block_nodes});
  r.add({.name = "query-block", .returns = "[BlockInfo]", .handler = co_query_block});
  r.add({.name = "query-blockstats",
         .args = {{"query-nodes", "bool", true}},
         .returns = "[BlockStats]",
         .handler = co_query_blockstats});
  r.add({.name = "block_resize",
         .args = {{"device", "str", true}, {"node-name", "str", true}, {"size", "int"}},
         .handler = co_block_resize});
  register_reopen_command(ctx);
  register_create_command(ctx);
}

}  // namespace strata::qmp
