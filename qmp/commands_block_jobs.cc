// The commands that start block jobs on a backing chain: block-commit and
// block-stream, with QEMU's argument checks in QEMU's order (blockdev.c
// qmp_block_commit, qmp_block_stream), over the engine's job API
// (jobs/commit.h, jobs/stream.h).
#include "jobs/commit.h"
#include "jobs/stream.h"
#include "qmp/block_chain.h"
#include "qmp/block_lookup.h"
#include "qmp/commands.h"
#include "qmp/context.h"
#include "qmp/job_args.h"

namespace strata::qmp {

namespace {

Result<Node*> commit_top(const Graph& graph, Node& bs, const json& args) {
  if (args.contains("top-node") && args.contains("top")) {
    return Error{EINVAL, "'top-node' and 'top' are mutually exclusive"};
  }
  if (args.contains("top-node")) {
    std::string name = args["top-node"].get<std::string>();
    STRATA_TRY_ASSIGN(Node * top, lookup_bs(graph, "", name));
    if (!chain_contains(bs, *top)) {
      return Error{EINVAL, "'" + name + "' is not in this backing file chain"};
    }
    return top;
  }
  Node* top = &bs;
  std::string name = args.value("top", "");
  if (!name.empty() && name != bs.driver().filename()) top = find_backing_image(bs, name);
  if (!top) return Error{ENOENT, "Top image file " + name + " not found"};
  return top;
}

Result<Node*> commit_base(const Graph& graph, Node& top, const json& args) {
  if (args.contains("base-node") && args.contains("base")) {
    return Error{EINVAL, "'base-node' and 'base' are mutually exclusive"};
  }
  if (args.contains("base-node")) {
    std::string name = args["base-node"].get<std::string>();
    STRATA_TRY_ASSIGN(Node * base, lookup_bs(graph, "", name));
    if (!chain_contains(top, *base)) {
      return Error{EINVAL, "'" + name + "' is not in this backing file chain"};
    }
    return base;
  }
  if (args.contains("base")) {
    std::string name = args["base"].get<std::string>();
    Node* base = find_backing_image(top, name);
    if (!base) return Error{ENOENT, "Can't find '" + name + "' in the backing chain"};
    return base;
  }
  Node* base = find_base(top);
  if (!base) return Error{ENOENT, "There is no backimg image"};
  return base;
}

Result<void> check_commit_targets(Node& top, Node& base) {
  Node* stop = Graph::chain_child(base) ? Graph::chain_child(base)->node() : nullptr;
  for (Node* n = &top; n && n != stop;) {
    STRATA_TRY(n->check_op(BlockOp::kCommitTarget));
    Child* c = Graph::chain_child(*n);
    n = c ? c->node() : nullptr;
  }
  return {};
}

Task<Result<json>> co_block_commit(QmpContext& ctx, json args) {
  Engine& engine = ctx.engine();
  Graph& graph = engine.graph();
  std::string device = args["device"].get<std::string>();
  STRATA_CO_TRY_ASSIGN(Node * bs, get_job_device(graph, device));
  STRATA_CO_TRY(bs->check_op(BlockOp::kCommitSource));
  STRATA_CO_TRY_ASSIGN(Node * top, commit_top(graph, *bs, args));
  STRATA_CO_TRY_ASSIGN(Node * base, commit_base(graph, *top, args));
  STRATA_CO_TRY(check_commit_targets(*top, *base));
  if (top == base) co_return Error{EINVAL, "cannot commit an image into itself"};
  bool active = is_active_commit(*bs, *top);
  if (active && args.contains("backing-file")) {
    if (skip_filters(top) == skip_filters(bs)) {
      co_return Error{EINVAL, "'backing-file' specified, but 'top' is the active layer"};
    }
    co_return Error{EINVAL, "'backing-file' specified, but 'top' has a writer on it"};
  }
  if (!active) {
    Node* overlay = find_overlay(*bs, *top);
    if (overlay) STRATA_CO_TRY(overlay->check_op(BlockOp::kCommitTarget));
  }
  CommitParams p;
  p.job = job_options(args, device);
  p.active = bs;
  p.top = top;
  p.base = base;
  p.backing_file = args.value("backing-file", "");
  p.speed = args.value("speed", int64_t{0});
  p.on_error = on_error_of(args, "on-error");
  p.filter_node_name = args.value("filter-node-name", "");
  p.merge_bitmaps = args.value("x-merge-bitmaps", false);
  auto job = co_await co_start_commit(engine, std::move(p));
  if (!job) co_return std::move(job).error();
  co_return json::object();
}

// block-stream's `base`, `base-node` or `bottom` (at most one), checked as
// qmp_block_stream checks them.
Result<void> stream_layers(const Graph& graph, Node& bs, const json& args, StreamParams* p) {
  const std::string device = args["device"].get<std::string>();
  if (args.contains("base") && args.contains("base-node")) {
    return Error{EINVAL, "'base' and 'base-node' cannot be specified at the same time"};
  }
  if (args.contains("base") && args.contains("bottom")) {
    return Error{EINVAL, "'base' and 'bottom' cannot be specified at the same time"};
  }
  if (args.contains("bottom") && args.contains("base-node")) {
    return Error{EINVAL, "'bottom' and 'base-node' cannot be specified at the same time"};
  }
  if (args.contains("base")) {
    std::string name = args["base"].get<std::string>();
    p->base = find_backing_image(bs, name);
    if (!p->base) return Error{ENOENT, "Can't find '" + name + "' in the backing chain"};
  }
  if (args.contains("base-node")) {
    std::string name = args["base-node"].get<std::string>();
    STRATA_TRY_ASSIGN(p->base, lookup_bs(graph, "", name));
    if (p->base == &bs || !chain_contains(bs, *p->base)) {
      return Error{EINVAL, "Node '" + name + "' is not a backing image of '" + device + "'"};
    }
  }
  if (args.contains("bottom")) {
    std::string name = args["bottom"].get<std::string>();
    STRATA_TRY_ASSIGN(p->bottom, lookup_bs(graph, "", name));
    if (p->bottom->driver().filtered_child()) {
      return Error{EINVAL, "Node '" + name + "' is a filter, use a non-filter node as 'bottom'"};
    }
    if (!chain_contains(bs, *p->bottom)) {
      return Error{EINVAL, "Node '" + name + "' is not in a chain starting from '" + device + "'"};
    }
  }
  return {};
}

// Every node from bs down to the base (or below bottom) must allow streaming.
Result<void> check_stream_chain(Node& bs, const StreamParams& p) {
  Node* end = p.base;
  if (p.bottom)
    end = Graph::chain_child(*p.bottom) ? Graph::chain_child(*p.bottom)->node() : nullptr;
  for (Node* n = &bs; n && n != end;) {
    STRATA_TRY(n->check_op(BlockOp::kStream));
    Child* c = Graph::chain_child(*n);
    n = c ? c->node() : nullptr;
  }
  return {};
}

Task<Result<json>> co_block_stream(QmpContext& ctx, json args) {
  Engine& engine = ctx.engine();
  std::string device = args["device"].get<std::string>();
  STRATA_CO_TRY_ASSIGN(Node * bs, lookup_bs(engine.graph(), device, device));
  StreamParams p;
  STRATA_CO_TRY(stream_layers(engine.graph(), *bs, args, &p));
  STRATA_CO_TRY(check_stream_chain(*bs, p));
  if (!p.base && args.contains("backing-file")) {
    co_return Error{EINVAL, "backing file specified, but streaming the entire chain"};
  }
  p.job = job_options(args, device);
  p.bs = bs;
  p.backing_file = args.value("backing-file", "");
  p.backing_mask_protocol = args.value("backing-mask-protocol", false);
  p.speed = args.value("speed", int64_t{0});
  p.on_error = on_error_of(args, "on-error");
  p.filter_node_name = args.value("filter-node-name", "");
  auto job = co_await StreamJob::co_start(engine, std::move(p));
  if (!job) co_return std::move(job).error();
  co_return json::object();
}

}  // namespace

void register_block_job_commands(QmpContext& ctx) {
  CommandRegistry& r = ctx.registry();
  r.add({.name = "block-commit",
         .args = {{"job-id", "str", true},
                  {"device", "str"},
                  {"base-node", "str", true},
                  {"base", "str", true},
                  {"top-node", "str", true},
                  {"top", "str", true},
                  {"backing-file", "str", true},
                  {"speed", "int", true},
                  {"on-error", "BlockdevOnError", true},
                  {"filter-node-name", "str", true},
                  {"auto-finalize", "bool", true},
                  {"auto-dismiss", "bool", true},
                  {"x-merge-bitmaps", "bool", true}},
         .handler = co_block_commit});
  r.add({.name = "block-stream",
         .args = {{"job-id", "str", true},
                  {"device", "str"},
                  {"base", "str", true},
                  {"base-node", "str", true},
                  {"backing-file", "str", true},
                  {"bottom", "str", true},
                  {"backing-mask-protocol", "bool", true},
                  {"speed", "int", true},
                  {"on-error", "BlockdevOnError", true},
                  {"filter-node-name", "str", true},
                  {"auto-finalize", "bool", true},
                  {"auto-dismiss", "bool", true}},
         .handler = co_block_stream});
}

}  // namespace strata::qmp
