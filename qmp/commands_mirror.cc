// blockdev-mirror: a mirror of a device onto an existing node, with QEMU
// 7.2's argument checks in QEMU's order (blockdev.c qmp_blockdev_mirror and
// blockdev_mirror_common, block.c check_to_replace_node, mirror.c
// mirror_start), over the engine's job API (jobs/mirror.h).
#include <optional>

#include "jobs/mirror.h"
#include "qmp/block_chain.h"
#include "qmp/block_lookup.h"
#include "qmp/commands.h"
#include "qmp/context.h"
#include "qmp/job_args.h"

namespace strata::qmp {

namespace {

constexpr uint64_t kMinGranularity = 512;
constexpr uint64_t kMaxGranularity = 64 << 20;

Result<uint64_t> granularity_of(const json& args) {
  uint64_t g = args.value("granularity", uint64_t{0});
  if (g != 0 && (g < kMinGranularity || g > kMaxGranularity)) {
    return Error{EINVAL, "Parameter 'granularity' expects a value in range [512B, 64MB]"};
  }
  if (g & (g - 1)) return Error{EINVAL, "Parameter 'granularity' expects a power of 2"};
  return g;
}

// QEMU's check_to_replace_node: an existing node, not blocked, and only
// the source itself or a node above it through filters.
Result<void> check_replaces(const Graph& graph, Node& bs, const std::string& name) {
  Node* node = graph.find(name);
  if (!node) return Error{ENOENT, "Failed to find node with node-name='" + name + "'"};
  STRATA_TRY(node->check_op(BlockOp::kReplace));
  STRATA_TRY(check_not_backing(*node));  // QEMU's backing blocker
  if (skip_filters(node) != skip_filters(&bs)) {
    return Error{EINVAL, "Cannot replace '" + name + "' by a node mirrored from '" + bs.name() +
                             "', because it cannot be guaranteed that doing so would not lead "
                             "to an abrupt change of visible data"};
  }
  if (node->size() != bs.size()) {
    return Error{EINVAL, "cannot replace image with a mirror image of different size"};
  }
  return {};
}

// sync top without a backing file is sync full; incremental and bitmap are
// not mirror modes (refused by mirror_start, after the other checks).
std::optional<MirrorSync> sync_of(const std::string& s, Node& bs) {
  if (s == "full") return MirrorSync::kFull;
  if (s == "none") return MirrorSync::kNone;
  if (s == "top") return Graph::chain_child(bs) ? MirrorSync::kTop : MirrorSync::kFull;
  return std::nullopt;
}

Task<Result<json>> co_blockdev_mirror(QmpContext& ctx, json args) {
  Engine& engine = ctx.engine();
  Graph& graph = engine.graph();
  std::string device = args["device"].get<std::string>();
  std::string target_name = args["target"].get<std::string>();
  STRATA_CO_TRY_ASSIGN(Node * bs, get_root_bs(graph, device));
  STRATA_CO_TRY_ASSIGN(Node * target, lookup_bs(graph, target_name, target_name));
  STRATA_CO_TRY_ASSIGN(uint64_t granularity, granularity_of(args));
  STRATA_CO_TRY(bs->check_op(BlockOp::kMirrorSource));
  STRATA_CO_TRY(target->check_op(BlockOp::kMirrorTarget));
  STRATA_CO_TRY(check_not_backing(*target));  // QEMU's backing blocker
  std::string sync_name = args["sync"].get<std::string>();
  std::optional<MirrorSync> sync = sync_of(sync_name, *bs);
  if (args.contains("replaces")) {
    STRATA_CO_TRY(check_replaces(graph, *bs, args["replaces"].get<std::string>()));
  }
  if (!sync) co_return Error{EINVAL, "Sync mode '" + sync_name + "' not supported"};
  int64_t buf_size = args.value("buf-size", int64_t{0});
  if (buf_size < 0) co_return Error{EINVAL, "Invalid parameter 'buf-size'"};
  if (skip_filters(bs) == skip_filters(target)) {
    co_return Error{EINVAL, "Can't mirror node into itself"};
  }
  if (chain_contains(*bs, *skip_filters(target))) {
    co_return Error{EINVAL,
                    "Cannot mirror to a filter on top of a node in the source's backing chain"};
  }
  MirrorParams p;
  p.job = job_options(args, device);
  p.source = bs;
  p.target = target;
  p.sync = *sync;
  if (*sync == MirrorSync::kTop) p.base = Graph::chain_child(*bs)->node();
  p.replaces = args.value("replaces", "");
  p.granularity = granularity;
  p.buf_size = static_cast<uint64_t>(buf_size);
  p.on_source_error = on_error_of(args, "on-source-error");
  p.on_target_error = on_error_of(args, "on-target-error");
  p.filter_node_name = args.value("filter-node-name", "");
  p.write_blocking = args.value("copy-mode", "background") == "write-blocking";
  p.zero_target = *sync == MirrorSync::kFull;
  p.speed = args.value("speed", int64_t{0});
  auto job = co_await MirrorJob::co_start(engine, std::move(p));
  if (!job) co_return std::move(job).error();
  co_return json::object();
}

}  // namespace

void register_mirror_commands(QmpContext& ctx) {
  CommandRegistry& r = ctx.registry();
  r.schema().add_enum("MirrorSyncMode", {"top", "full", "none", "incremental", "bitmap"});
  r.schema().add_enum("MirrorCopyMode", {"background", "write-blocking"});
  r.add({.name = "blockdev-mirror",
         .args = {{"job-id", "str", true},
                  {"device", "str"},
                  {"target", "str"},
                  {"replaces", "str", true},
                  {"sync", "MirrorSyncMode"},
                  {"speed", "int", true},
                  {"granularity", "uint32", true},
                  {"buf-size", "int", true},
                  {"on-source-error", "BlockdevOnError", true},
                  {"on-target-error", "BlockdevOnError", true},
                  {"filter-node-name", "str", true},
                  {"copy-mode", "MirrorCopyMode", true},
                  {"auto-finalize", "bool", true},
                  {"auto-dismiss", "bool", true}},
         .handler = co_blockdev_mirror});
}

}  // namespace strata::qmp
