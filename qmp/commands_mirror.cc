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
#include "qmp/snapshot.h"

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

// QEMU's blockdev_mirror_common: the checks both commands share, in
// QEMU's order, then the job.
Task<Result<void>> co_mirror_common(Engine& engine, const json& args, Node* bs, Node* target,
                                    MirrorBacking backing, bool target_reads_zero) {
  Graph& graph = engine.graph();
  std::string device = args["device"].get<std::string>();
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
  p.backing = backing;
  p.unmap = args.value("unmap", true);
  p.target_is_zero = args.value("target-is-zero", target_reads_zero);
  p.carry_bitmaps = args.value("x-carry-bitmaps", false);
  p.speed = args.value("speed", int64_t{0});
  auto job = co_await MirrorJob::co_start(engine, std::move(p));
  if (!job) co_return std::move(job).error();
  co_return Result<void>{};
}

Task<Result<json>> co_blockdev_mirror(QmpContext& ctx, json args) {
  Graph& graph = ctx.engine().graph();
  std::string target_name = args["target"].get<std::string>();
  STRATA_CO_TRY_ASSIGN(Node * bs, get_root_bs(graph, args["device"].get<std::string>()));
  STRATA_CO_TRY_ASSIGN(Node * target, lookup_bs(graph, target_name, target_name));
  STRATA_CO_TRY(
      co_await co_mirror_common(ctx.engine(), args, bs, target, MirrorBacking::kLeave, false));
  co_return json::object();
}

// drive-mirror (QEMU 7.2's qmp_drive_mirror): the target file is created
// (mode absolute-paths, the default: with the source's backing file named
// in it for sync top and none) or opened as it is (mode existing), then the
// checks of blockdev-mirror run and the job starts. As in QEMU, a check
// that fails after the target was created leaves the new file behind.
Task<Result<json>> co_drive_mirror(QmpContext& ctx, json args) {
  Engine& engine = ctx.engine();
  Graph& graph = engine.graph();
  STRATA_CO_TRY_ASSIGN(Node * bs, get_root_bs(graph, args["device"].get<std::string>()));
  STRATA_CO_TRY(bs->check_op(BlockOp::kMirrorSource));
  bool existing = args.value("mode", "absolute-paths") == "existing";
  std::string format = args.value("format", existing ? "" : bs->driver_name());
  if (format.empty()) {
    co_return Error{EINVAL,
                    "drive-mirror with mode 'existing' needs 'format': Strata does not "
                    "guess an image's format"};
  }
  std::string sync = args["sync"].get<std::string>();
  Child* cow = Graph::chain_child(*skip_filters(bs));
  Node* target_backing = cow ? cow->node() : nullptr;
  if (!target_backing && sync == "top") sync = "full";
  if (sync == "none") target_backing = bs;
  if (args.contains("replaces") && !args.contains("node-name")) {
    co_return Error{EINVAL,
                    "a node-name must be provided when replacing a named node of the graph"};
  }
  if (!existing) {
    Node* backing = sync == "full" ? nullptr : target_backing;
    if (backing) backing = skip_filters(backing);  // implicit filters are not named
    STRATA_CO_TRY(co_await co_create_target_image(engine, args["target"].get<std::string>(), format,
                                                  bs->size(), backing));
  }
  // A new image is opened without its backing file (the pivot attaches the
  // source's chain), an existing one with the chain its header names. The
  // node closes with the job unless the pivot gives it users.
  STRATA_CO_TRY_ASSIGN(Node * target,
                       co_await co_open_image_node(graph, args["target"].get<std::string>(), format,
                                                   args.value("node-name", ""), existing, true));
  // A new image without a backing file reads as zeroes already (QEMU
  // skips zeroing it): zeroes of the source need not be written there.
  bool reads_zero = sync == "full" && !existing;
  args["sync"] = sync;
  auto r = co_await co_mirror_common(engine, args, bs, target,
                                     existing ? MirrorBacking::kLeave : MirrorBacking::kSourceChain,
                                     reads_zero);
  co_await graph.co_release_if_unused(target);  // the job's edges keep it open
  if (!r) co_return std::move(r).error();
  co_return json::object();
}

}  // namespace

void register_mirror_commands(QmpContext& ctx) {
  CommandRegistry& r = ctx.registry();
  r.schema().add_enum("MirrorSyncMode", {"top", "full", "none", "incremental", "bitmap"});
  r.schema().add_enum("MirrorCopyMode", {"background", "write-blocking"});
  r.schema().add_enum("NewImageMode", {"existing", "absolute-paths"});
  // The members both commands share, in QEMU's order.
  std::vector<Member> copy = {{"speed", "int", true},
                              {"granularity", "uint32", true},
                              {"buf-size", "int", true},
                              {"on-source-error", "BlockdevOnError", true},
                              {"on-target-error", "BlockdevOnError", true}};
  std::vector<Member> tail = {{"copy-mode", "MirrorCopyMode", true},
                              {"auto-finalize", "bool", true},
                              {"auto-dismiss", "bool", true},
                              {"x-carry-bitmaps", "bool", true}};
  auto join = [](std::initializer_list<std::vector<Member>> parts) {
    std::vector<Member> out;
    for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
    return out;
  };
  r.add({.name = "drive-mirror",
         .args = join({{{"job-id", "str", true},
                        {"device", "str"},
                        {"target", "str"},
                        {"format", "str", true},
                        {"node-name", "str", true},
                        {"replaces", "str", true},
                        {"sync", "MirrorSyncMode"},
                        {"mode", "NewImageMode", true}},
                       copy,
                       {{"unmap", "bool", true}},
                       tail}),
         .handler = co_drive_mirror});
  r.add({.name = "blockdev-mirror",
         .args = join({{{"job-id", "str", true},
                        {"device", "str"},
                        {"target", "str"},
                        {"replaces", "str", true},
                        {"sync", "MirrorSyncMode"}},
                       copy,
                       {{"filter-node-name", "str", true}},
                       tail,
                       {{"target-is-zero", "bool", true}}}),
         .handler = co_blockdev_mirror});
}

}  // namespace strata::qmp
