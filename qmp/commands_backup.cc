// blockdev-backup and drive-backup, as commands and as transaction actions
// (QEMU 7.2's blockdev.c: blockdev_backup_action, drive_backup_action and
// do_backup_common, with the later members discard-source, x-perf
// min-cluster-size and on-cbw-error), over the engine's job API
// (jobs/backup.h).
//
// As in QEMU, an action drains its source from prepare to clean, so every
// backup (and bitmap action) of one transaction starts at the same point
// in time; prepare creates the job, commit starts it, abort discards it.
// With completion-mode grouped the jobs share one job transaction.
#include <optional>

#include "block/core/graph_change.h"
#include "jobs/backup.h"
#include "jobs/job_registry.h"
#include "qmp/block_chain.h"
#include "qmp/block_lookup.h"
#include "qmp/commands.h"
#include "qmp/context.h"
#include "qmp/job_args.h"
#include "qmp/snapshot.h"
#include "qmp/transaction.h"

namespace strata::qmp {

namespace {

std::optional<BitmapSyncMode> bitmap_mode_of(const json& args) {
  if (!args.contains("bitmap-mode")) return std::nullopt;
  std::string m = args["bitmap-mode"].get<std::string>();
  if (m == "never") return BitmapSyncMode::kNever;
  if (m == "always") return BitmapSyncMode::kAlways;
  return BitmapSyncMode::kOnSuccess;
}

BackupSync sync_of(const std::string& s) {
  if (s == "top") return BackupSync::kTop;
  if (s == "none") return BackupSync::kNone;
  if (s == "bitmap" || s == "incremental") return BackupSync::kBitmap;
  return BackupSync::kFull;
}

// QEMU's do_backup_common: the bitmap arguments, in QEMU's order.
Result<void> bitmap_args(const json& args, Node& bs, BackupParams& p) {
  std::string sync = args["sync"].get<std::string>();
  std::optional<BitmapSyncMode> mode = bitmap_mode_of(args);
  bool has_bitmap = args.contains("bitmap");
  if ((sync == "bitmap" || sync == "incremental") && !has_bitmap) {
    return Error{EINVAL, "must provide a valid bitmap name for '" + sync + "' sync mode"};
  }
  if (sync == "incremental") {
    if (mode && *mode != BitmapSyncMode::kOnSuccess) {
      return Error{EINVAL,
                   "Bitmap sync mode must be 'on-success' when using sync mode 'incremental'"};
    }
    sync = "bitmap";
    mode = BitmapSyncMode::kOnSuccess;
  }
  p.sync = sync_of(sync);
  if (has_bitmap) {
    std::string name = args["bitmap"].get<std::string>();
    DirtyBitmap* bitmap = bs.bitmaps_if_any() ? bs.bitmaps().find(name) : nullptr;
    if (!bitmap) return Error{ENOENT, "Bitmap '" + name + "' could not be found"};
    if (!mode) return Error{EINVAL, "Bitmap sync mode must be given when providing a bitmap"};
    STRATA_TRY(bitmap->check(kBitmapAllowRo));
    if (sync == "none") {
      return Error{EINVAL, "sync mode 'none' does not produce meaningful bitmap outputs"};
    }
    if (*mode == BitmapSyncMode::kNever && sync != "bitmap") {
      return Error{EINVAL,
                   "Bitmap sync mode 'never' has no meaningful effect when combined with sync "
                   "mode '" +
                       sync + "'"};
    }
    p.bitmap = bitmap;
  }
  if (!has_bitmap && mode) {
    return Error{EINVAL, "Cannot specify bitmap sync mode without a bitmap"};
  }
  p.bitmap_mode = mode.value_or(BitmapSyncMode::kOnSuccess);
  return {};
}

Result<BackupParams> backup_params(const json& args, Node& bs, Node& target) {
  BackupParams p;
  p.job = job_options(args, args["device"].get<std::string>());
  p.source = &bs;
  p.target = &target;
  p.speed = args.value("speed", int64_t{0});
  p.compress = args.value("compress", false);
  p.on_source_error = on_error_of(args, "on-source-error");
  p.on_target_error = on_error_of(args, "on-target-error");
  p.filter_node_name = args.value("filter-node-name", "");
  p.discard_source = args.value("discard-source", false);
  if (args.value("on-cbw-error", "break-guest-write") == "break-snapshot") {
    p.on_cbw_error = OnCbwError::kBreakSnapshot;
  }
  if (auto perf = args.find("x-perf"); perf != args.end()) {
    p.perf.max_workers = perf->value("max-workers", int64_t{64});
    p.perf.max_chunk = perf->value("max-chunk", int64_t{0});
    p.perf.min_cluster_size = perf->value("min-cluster-size", uint64_t{0});
  }
  STRATA_TRY(bitmap_args(args, bs, p));
  return p;
}

// Both commands' action: the source and target nodes are found in
// prepare (drive-backup creates and opens its target there).
class BackupAction : public Action {
 public:
  BackupAction(QmpContext& ctx, json data, const TransactionOptions& options)
      : ctx_(ctx), data_(std::move(data)), txn_(options.job_txn) {}

  Task<Result<void>> co_prepare() override {
    Graph& graph = ctx_.engine().graph();
    std::string device = data_["device"].get<std::string>();
    STRATA_CO_TRY_ASSIGN(Node * bs, lookup_bs(graph, device, device));
    std::vector<Node*> drained = {bs};
    section_ = co_await graph.co_drain(std::move(drained));
    auto opened = co_await co_target(*bs);
    if (!opened) {
      co_await co_forget_target();
      co_return std::move(opened).error();
    }
    Node* target = *opened;
    auto p = backup_params(data_, *bs, *target);
    if (!p) {
      co_await co_forget_target();
      co_return std::move(p).error();
    }
    auto job = co_await BackupJob::co_create(ctx_.engine(), std::move(*p), txn_);
    co_await co_forget_target();
    if (!job) co_return std::move(job).error();
    job_ = *job;
    // The job starts inside the drain (QEMU's order: paused, then running
    // again when the transaction ends).
    std::vector<Node*> filter = {job_->filter()};
    job_section_ = co_await graph.co_drain(std::move(filter));
    co_return Result<void>{};
  }
  Task<void> co_commit() override {
    if (job_) job_->start();
    co_return;
  }
  Task<void> co_abort() override {
    job_section_.reset();  // the filter goes with the job
    if (job_) co_await job_->co_discard();
    job_.reset();
  }
  Task<void> co_clean() override {
    job_section_.reset();
    section_.reset();
    co_return;
  }

 protected:
  virtual Task<Result<Node*>> co_target(Node& bs) {
    std::string name = data_["target"].get<std::string>();
    co_return lookup_bs(ctx_.engine().graph(), name, name);
  }
  // A target the action opened goes with the job (or at once).
  virtual Task<void> co_forget_target() { co_return; }

  QmpContext& ctx_;
  json data_;

 private:
  std::shared_ptr<JobTxn> txn_;
  std::unique_ptr<DrainSection> section_;
  std::unique_ptr<DrainSection> job_section_;
  std::shared_ptr<BackupJob> job_;
};

// drive-backup (QEMU 7.2's drive_backup_action): the target file is
// created (mode absolute-paths, the default; for sync top and none it
// names the source's backing file, resp. the source, as its backing file,
// and is given that node as backing in the graph) or opened as it is
// (mode existing, with the chain its header names).
class DriveBackupAction final : public BackupAction {
 public:
  using BackupAction::BackupAction;

 protected:
  Task<Result<Node*>> co_target(Node& bs) override {
    Engine& engine = ctx_.engine();
    Graph& graph = engine.graph();
    STRATA_CO_TRY(bs.check_op(BlockOp::kBackupSource));
    bool existing = data_.value("mode", "absolute-paths") == "existing";
    std::string format = data_.value("format", existing ? "" : bs.driver_name());
    if (format.empty()) {
      co_return Error{EINVAL,
                      "drive-backup with mode 'existing' needs 'format': Strata does not guess "
                      "an image's format"};
    }
    std::string sync = data_["sync"].get<std::string>();
    Node* source = nullptr;
    if (sync == "top") {
      Child* cow = Graph::chain_child(*skip_filters(&bs));
      source = cow ? cow->node() : nullptr;
      if (!source) data_["sync"] = "full";
    }
    if (sync == "none") source = &bs;
    std::string path = data_["target"].get<std::string>();
    if (!existing) {
      Node* named = source ? skip_filters(source) : nullptr;
      STRATA_CO_TRY(co_await co_create_target_image(engine, path, format, bs.size(), named));
    }
    STRATA_CO_TRY_ASSIGN(Node * target,
                         co_await co_open_image_node(graph, path, format, "", existing, true));
    target_name_ = target->name();
    if (!existing && source) STRATA_CO_TRY(co_await co_set_backing(*target, *source));
    co_return target;
  }
  // By name: a job that failed half way may have taken the node with it.
  Task<void> co_forget_target() override {
    Graph& graph = ctx_.engine().graph();
    Node* target = target_name_.empty() ? nullptr : graph.find(target_name_);
    target_name_.clear();
    if (target) co_await graph.co_release_if_unused(target);
  }

 private:
  static Task<Result<void>> co_set_backing(Node& target, Node& backing) {
    GraphChange change(target.engine().graph());
    std::vector<Node*> drained = {&target};
    co_await change.co_drain(std::move(drained));
    Result<void> r;
    auto attached = change.attach(target, backing, "backing", kRoleCow);
    if (!attached) r = std::move(attached).error();
    if (r) r = change.commit();
    co_await change.co_finish();
    co_return r;
  }
  std::string target_name_;
};

template <typename A>
ActionFactory factory() {
  return [](QmpContext& ctx, json data, const TransactionOptions& options) {
    return std::make_unique<A>(ctx, std::move(data), options);
  };
}

template <typename A>
CommandHandler command() {
  return [](QmpContext& ctx, json args) -> Task<Result<json>> {
    auto r = co_await co_run_single_action(
        std::make_unique<A>(ctx, std::move(args), TransactionOptions{}));
    if (!r) co_return std::move(r).error();
    co_return json::object();
  };
}

void declare_types(Schema& s) {
  s.add_enum("BitmapSyncMode", {"on-success", "never", "always"});
  s.add_enum("OnCbwError", {"break-guest-write", "break-snapshot"});
  s.add_object("BackupPerf", {{"use-copy-range", "bool", true},
                              {"max-workers", "int", true},
                              {"max-chunk", "int64", true},
                              {"min-cluster-size", "size", true}});
  std::vector<Member> common = {{"job-id", "str", true},
                                {"device", "str"},
                                {"sync", "MirrorSyncMode"},
                                {"speed", "int", true},
                                {"bitmap", "str", true},
                                {"bitmap-mode", "BitmapSyncMode", true},
                                {"compress", "bool", true},
                                {"on-source-error", "BlockdevOnError", true},
                                {"on-target-error", "BlockdevOnError", true},
                                {"on-cbw-error", "OnCbwError", true},
                                {"auto-finalize", "bool", true},
                                {"auto-dismiss", "bool", true},
                                {"filter-node-name", "str", true},
                                {"discard-source", "bool", true},
                                {"x-perf", "BackupPerf", true}};
  std::vector<Member> blockdev = common;
  blockdev.push_back({"target", "str"});
  s.add_object("BlockdevBackup", blockdev);
  std::vector<Member> drive = common;
  drive.push_back({"target", "str"});
  drive.push_back({"format", "str", true});
  drive.push_back({"mode", "NewImageMode", true});
  s.add_object("DriveBackup", drive);
}

}  // namespace

void register_backup_commands(QmpContext& ctx) {
  CommandRegistry& r = ctx.registry();
  declare_types(r.schema());
  r.add_action({"blockdev-backup", "BlockdevBackup", true, factory<BackupAction>()});
  r.add_action({"drive-backup", "DriveBackup", true, factory<DriveBackupAction>()});
  r.add({.name = "blockdev-backup", .boxed = "BlockdevBackup", .handler = command<BackupAction>()});
  r.add({.name = "drive-backup", .boxed = "DriveBackup", .handler = command<DriveBackupAction>()});
}

}  // namespace strata::qmp
