// External snapshots: blockdev-snapshot and blockdev-snapshot-sync, as
// transaction actions and as commands (a one-action transaction, as in
// QEMU). Prepare puts the overlay above the old node in one graph change
// (old becomes its backing, old's parents move to the overlay); commit
// makes the old node read-only; abort undoes the graph change.
#include "qmp/snapshot.h"

#include "base/log.h"
#include "block/core/filename.h"
#include "block/core/graph_change.h"
#include "qmp/block_lookup.h"
#include "qmp/commands.h"
#include "qmp/context.h"
#include "qmp/transaction.h"

namespace strata::qmp {

namespace {

class ExternalSnapshot final : public Action {
 public:
  ExternalSnapshot(QmpContext& ctx, json data, bool sync)
      : ctx_(ctx),
        graph_(ctx.engine().graph()),
        change_(graph_),
        data_(std::move(data)),
        sync_(sync) {}

  Task<Result<void>> co_prepare() override;
  Task<void> co_commit() override;
  Task<void> co_abort() override;
  Task<void> co_clean() override;

 private:
  Task<Result<Node*>> co_open_overlay();
  Result<void> check_overlay(const Node& overlay) const;

  QmpContext& ctx_;
  Graph& graph_;
  GraphChange change_;
  json data_;
  bool sync_;
  Node* old_ = nullptr;
  Node* new_ = nullptr;
  std::string new_name_;
  bool opened_here_ = false;
};

Task<Result<Node*>> ExternalSnapshot::co_open_overlay() {
  if (!sync_) {
    std::string overlay = data_["overlay"].get<std::string>();
    co_return lookup_bs(graph_, overlay, overlay);
  }
  std::string node_name = data_.value("node-name", "");
  std::string snap_name = data_.value("snapshot-node-name", "");
  if (!node_name.empty() && snap_name.empty()) {
    co_return Error{EINVAL, "New overlay node-name missing"};
  }
  if (!snap_name.empty() && graph_.find(snap_name)) {
    co_return Error{EEXIST, "New overlay node-name already in use"};
  }
  std::string format = data_.value("format", "qcow2");
  std::string file = data_["snapshot-file"].get<std::string>();
  if (data_.value("mode", "absolute-paths") != "existing") {
    STRATA_CO_TRY(co_await co_create_overlay_image(ctx_.engine(), file, format, *old_));
  }
  STRATA_CO_TRY_ASSIGN(Node * node,
                       co_await co_open_image_node(graph_, file, format, snap_name, false, false));
  opened_here_ = true;
  co_return node;
}

Result<void> ExternalSnapshot::check_overlay(const Node& overlay) const {
  if (overlay.cumulative_perm() & kPermConsistentRead) {
    return Error{EBUSY, "The overlay is already in use"};
  }
  const DriverSpec* spec = graph_.drivers().find(overlay.driver_name());
  if ((spec && spec->kind == DriverKind::kFilter) || overlay.filtered()) {
    return Error{EINVAL, "Filters cannot be used as overlays"};
  }
  if (overlay.backing()) return Error{EINVAL, "The overlay already has a backing image"};
  if (!overlay.driver().supports_backing()) {
    return Error{EINVAL, "The overlay does not support backing images"};
  }
  return {};
}

Task<Result<void>> ExternalSnapshot::co_prepare() {
  std::string device = sync_ ? data_.value("device", "") : data_["node"].get<std::string>();
  std::string node_name = sync_ ? data_.value("node-name", "") : device;
  STRATA_CO_TRY_ASSIGN(old_, lookup_bs(graph_, device, node_name));
  std::vector<Node*> drained = {old_};
  co_await change_.co_drain(std::move(drained));
  STRATA_CO_TRY(old_->check_op(BlockOp::kExternalSnapshot));
  STRATA_CO_TRY(check_not_backing(*old_));
  if (!old_->read_only()) {
    auto flushed = co_await old_->co_flush(nullptr);
    if (!flushed) co_return Error{EIO, "An IO error has occurred"};
  }
  STRATA_CO_TRY_ASSIGN(new_, co_await co_open_overlay());
  new_name_ = new_->name();
  STRATA_CO_TRY(check_overlay(*new_));
  auto edge = change_.attach(*new_, *old_, "backing", kRoleCow);
  if (!edge) co_return std::move(edge).error();
  STRATA_CO_TRY(change_.replace(*old_, *new_));
  co_return change_.commit();
}

Task<void> ExternalSnapshot::co_commit() {
  if (old_->read_only()) co_return;
  old_->mutable_flags().read_only = true;
  if (!graph_.refresh_node_perms(*old_)) {
    // QEMU ignores a failure here too: the old node simply stays writable.
    old_->mutable_flags().read_only = false;
    (void)graph_.refresh_node_perms(*old_);
  }
}

Task<void> ExternalSnapshot::co_abort() {
  change_.abort();
  co_return;
}

Task<void> ExternalSnapshot::co_clean() {
  co_await change_.co_finish();
  // A node this action opened lives only as long as someone uses it
  // (QEMU drops its own reference here).
  if (opened_here_ && graph_.find(new_name_) == new_) co_await graph_.co_release_if_unused(new_);
}

std::unique_ptr<Action> make_snapshot(QmpContext& ctx, json data, const TransactionOptions&) {
  return std::make_unique<ExternalSnapshot>(ctx, std::move(data), false);
}

std::unique_ptr<Action> make_snapshot_sync(QmpContext& ctx, json data, const TransactionOptions&) {
  return std::make_unique<ExternalSnapshot>(ctx, std::move(data), true);
}

Task<Result<json>> co_blockdev_snapshot(QmpContext& ctx, json args) {
  STRATA_CO_TRY(co_await co_run_single_action(make_snapshot(ctx, std::move(args), {})));
  co_return json::object();
}

Task<Result<json>> co_blockdev_snapshot_sync(QmpContext& ctx, json args) {
  STRATA_CO_TRY(co_await co_run_single_action(make_snapshot_sync(ctx, std::move(args), {})));
  co_return json::object();
}

}  // namespace

void register_snapshot_commands(CommandRegistry& r) {
  Schema& s = r.schema();
  s.add_enum("NewImageMode", {"existing", "absolute-paths"});
  s.add_object("BlockdevSnapshot", {{"node", "str"}, {"overlay", "str"}});
  s.add_object("BlockdevSnapshotSync", {{"device", "str", true},
                                        {"node-name", "str", true},
                                        {"snapshot-file", "str"},
                                        {"snapshot-node-name", "str", true},
                                        {"format", "str", true},
                                        {"mode", "NewImageMode", true}});
  r.add_action({"blockdev-snapshot", "BlockdevSnapshot", false, make_snapshot});
  r.add_action({"blockdev-snapshot-sync", "BlockdevSnapshotSync", false, make_snapshot_sync});
  r.add(
      {.name = "blockdev-snapshot", .boxed = "BlockdevSnapshot", .handler = co_blockdev_snapshot});
  r.add({.name = "blockdev-snapshot-sync",
         .boxed = "BlockdevSnapshotSync",
         .handler = co_blockdev_snapshot_sync});
}

}  // namespace strata::qmp
