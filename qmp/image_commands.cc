// Commands that change an image's metadata in place, over the format's
// ImageOps (block/core/image_ops.h), with QEMU 7.2's checks, order and
// messages (blockdev.c):
// - blockdev-snapshot-internal-sync (a transaction action too: abort
//   deletes the snapshot it made) and blockdev-snapshot-delete-internal-sync;
// - change-backing-file (the header's backing file string; a read-only
//   image is reopened read-write for the change and back afterwards).
#include <cstring>
#include <optional>

#include "block/core/image_ops.h"
#include "block/core/reopen.h"
#include "qmp/block_chain.h"
#include "qmp/block_lookup.h"
#include "qmp/commands.h"
#include "qmp/context.h"
#include "qmp/transaction.h"

namespace strata::qmp {

namespace {

// QEMU's bdrv_can_snapshot / bdrv_snapshot_list: the node's format, or
// through a node that passes its file on (raw without a window, filters).
ImageOps* snapshot_ops(Node& node) {
  for (Node* n = &node; n;) {
    if (ImageOps* ops = n->driver().image_ops()) return ops;
    n = n->file() ? n->file()->node() : nullptr;
  }
  return nullptr;
}

// QEMU's bdrv_snapshot_find_by_id_and_name: what is given must match.
std::optional<SnapshotEntry> find_snapshot(const ImageOps& ops,
                                           const std::optional<std::string>& id,
                                           const std::optional<std::string>& name) {
  for (const SnapshotEntry& s : ops.list_snapshots()) {
    if ((!id || s.id == *id) && (!name || s.name == *name)) return s;
  }
  return std::nullopt;
}

std::optional<std::string> opt_arg(const json& args, const char* key) {
  if (!args.contains(key)) return std::nullopt;
  return args[key].get<std::string>();
}

class InternalSnapshot final : public Action {
 public:
  InternalSnapshot(QmpContext& ctx, json data) : graph_(ctx.engine().graph()), data_(data) {}

  Task<Result<void>> co_prepare() override {
    std::string device = data_["device"].get<std::string>();
    std::string name = data_["name"].get<std::string>();
    STRATA_CO_TRY_ASSIGN(bs_, get_root_bs(graph_, device));
    std::vector<Node*> nodes = {bs_};
    drained_ = co_await graph_.co_drain(std::move(nodes));
    STRATA_CO_TRY(bs_->check_op(BlockOp::kInternalSnapshot));
    if (bs_->read_only()) co_return Error{EROFS, "Device '" + device + "' is read only"};
    ops_ = snapshot_ops(*bs_);
    if (!ops_) {
      co_return Error{ENOTSUP, "Block format '" + bs_->driver_name() + "' used by device '" +
                                   device + "' does not support internal snapshots"};
    }
    if (name.empty()) co_return Error{EINVAL, "Name is empty"};
    if (find_snapshot(*ops_, std::nullopt, name)) {
      co_return Error{
          EEXIST, "Snapshot with name '" + name + "' already exists on device '" + device + "'"};
    }
    auto r = co_await ops_->co_snapshot_create(name, -1);  // as QEMU: none recorded
    if (!r) {
      co_return Error{r.error().code, "Failed to create snapshot '" + name + "' on device '" +
                                          device + "': " + std::strerror(r.error().code)};
    }
    auto made = find_snapshot(*ops_, std::nullopt, name);
    if (made) created_id_ = made->id;
    co_return Result<void>{};
  }

  // As QEMU: the snapshot this action made goes again.
  Task<void> co_abort() override {
    if (created_id_.empty()) co_return;
    (void)co_await ops_->co_snapshot_delete(created_id_);
  }

  Task<void> co_clean() override {
    drained_.reset();
    co_return;
  }

 private:
  Graph& graph_;
  json data_;
  Node* bs_ = nullptr;
  ImageOps* ops_ = nullptr;
  std::unique_ptr<DrainSection> drained_;
  std::string created_id_;
};

std::unique_ptr<Action> make_internal_snapshot(QmpContext& ctx, json data,
                                               const TransactionOptions&) {
  return std::make_unique<InternalSnapshot>(ctx, std::move(data));
}

Task<Result<json>> co_snapshot_internal_sync(QmpContext& ctx, json args) {
  STRATA_CO_TRY(co_await co_run_single_action(make_internal_snapshot(ctx, std::move(args), {})));
  co_return json::object();
}

json snapshot_info(const SnapshotEntry& s) {
  json info = {{"id", s.id},
               {"name", s.name},
               {"vm-state-size", s.vm_state_size},
               {"date-sec", s.date_sec},
               {"date-nsec", s.date_nsec},
               {"vm-clock-sec", s.vm_clock_nsec / 1000000000},
               {"vm-clock-nsec", s.vm_clock_nsec % 1000000000}};
  if (s.has_icount) info["icount"] = s.icount;
  return info;
}

Task<Result<json>> co_snapshot_delete_internal_sync(QmpContext& ctx, json args) {
  Graph& graph = ctx.engine().graph();
  std::string device = args["device"].get<std::string>();
  STRATA_CO_TRY_ASSIGN(Node * bs, get_root_bs(graph, device));
  auto id = opt_arg(args, "id");
  auto name = opt_arg(args, "name");
  if (!id && !name) co_return Error{EINVAL, "Name or id must be provided"};
  STRATA_CO_TRY(bs->check_op(BlockOp::kInternalSnapshotDelete));
  ImageOps* ops = snapshot_ops(*bs);
  if (!ops) co_return Error{ENOTSUP, "Failed to get a snapshot list: Operation not supported"};
  auto found = find_snapshot(*ops, id, name);
  if (!found) {
    co_return Error{ENOENT, "Snapshot with id '" + id.value_or("null") + "' and name '" +
                                name.value_or("null") + "' does not exist on device '" + device +
                                "'"};
  }
  std::vector<Node*> nodes = {bs};
  auto drained = co_await graph.co_drain(std::move(nodes));
  STRATA_CO_TRY(co_await ops->co_snapshot_delete(found->id));
  co_return snapshot_info(*found);
}

// QEMU's qmp_change_backing_file, including its choice of backing format:
// the image's own format.
Result<Node*> change_backing_target(Graph& graph, Node& bs, const json& args) {
  std::string image = args["image-node-name"].get<std::string>();
  STRATA_TRY_ASSIGN(Node * image_bs, lookup_bs(graph, "", image));
  if (!find_base(*image_bs)) {
    return Error{EINVAL, "not allowing backing file change on an image without a backing file"};
  }
  STRATA_TRY(bs.check_op(BlockOp::kChange));
  if (!chain_contains(bs, *image_bs)) {
    return Error{EINVAL, "'" + args["device"].get<std::string>() +
                             "' and image file are not in the same chain"};
  }
  return image_bs;
}

Task<Result<json>> co_change_backing_file(QmpContext& ctx, json args) {
  Graph& graph = ctx.engine().graph();
  STRATA_CO_TRY_ASSIGN(Node * bs, get_root_bs(graph, args["device"].get<std::string>()));
  STRATA_CO_TRY_ASSIGN(Node * image, change_backing_target(graph, *bs, args));
  std::string file = args["backing-file"].get<std::string>();
  bool ro = image->read_only();
  if (ro) {
    STRATA_CO_TRY(co_await co_set_read_only(graph, *image, false));
  }
  Result<void> r = Error{ENOTSUP, "Operation not supported"};
  if (ImageOps* ops = image->driver().image_ops()) {
    std::vector<Node*> nodes = {image};
    auto drained = co_await graph.co_drain(std::move(nodes));
    r = co_await ops->co_change_backing_file(file, image->driver_name());
  }
  if (!r) {
    r = Error{r.error().code,
              "Could not change backing file to '" + file + "': " + std::strerror(r.error().code)};
  }
  if (ro) (void)co_await co_set_read_only(graph, *image, true);
  if (!r) co_return std::move(r).error();
  co_return json::object();
}

}  // namespace

void register_image_commands(CommandRegistry& r) {
  r.schema().add_object("BlockdevSnapshotInternal", {{"device", "str"}, {"name", "str"}});
  r.add_action({"blockdev-snapshot-internal-sync", "BlockdevSnapshotInternal", false,
                make_internal_snapshot});
  r.add({.name = "blockdev-snapshot-internal-sync",
         .boxed = "BlockdevSnapshotInternal",
         .handler = co_snapshot_internal_sync});
  r.add({.name = "blockdev-snapshot-delete-internal-sync",
         .args = {{"device", "str"}, {"id", "str", true}, {"name", "str", true}},
         .handler = co_snapshot_delete_internal_sync});
  r.add({.name = "change-backing-file",
         .args = {{"device", "str"}, {"image-node-name", "str"}, {"backing-file", "str"}},
         .handler = co_change_backing_file});
}

}  // namespace strata::qmp
