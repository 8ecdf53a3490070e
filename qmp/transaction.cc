// The transaction runner, the `transaction` command and the `abort` action.
#include "qmp/transaction.h"

#include "block/core/graph.h"
#include "jobs/job_registry.h"
#include "qmp/context.h"
#include "strata/engine.h"

namespace strata::qmp {

namespace {

class AbortAction final : public Action {
 public:
  Task<Result<void>> co_prepare() override {
    co_return Error{ECANCELED, "Transaction aborted using Abort action"};
  }
};

std::unique_ptr<Action> make_abort(QmpContext&, json, const TransactionOptions&) {
  return std::make_unique<AbortAction>();
}

Task<void> co_finish(std::vector<std::unique_ptr<Action>>& actions, size_t count, bool commit) {
  for (size_t i = count; i-- > 0;) {
    if (commit) {
      co_await actions[i]->co_commit();
    } else {
      co_await actions[i]->co_abort();
    }
  }
  for (size_t i = count; i-- > 0;) co_await actions[i]->co_clean();
}

// As QEMU's qmp_transaction (bdrv_drain_all before any action): every node
// is drained once and released, so no request is in flight when the first
// action prepares. Jobs see it as any drain: a running job pauses and
// resumes, a ready one goes to standby and back (JOB_STATUS_CHANGE events).
Task<void> co_drain_everything(QmpContext& ctx) {
  auto section = co_await ctx.engine().graph().co_drain_all();
  section->end();
}

}  // namespace

Task<Result<void>> co_run_actions(std::vector<std::unique_ptr<Action>> actions) {
  for (size_t i = 0; i < actions.size(); i++) {
    auto prepared = co_await actions[i]->co_prepare();
    if (!prepared) {
      co_await co_finish(actions, i + 1, false);
      co_return prepared;
    }
  }
  co_await co_finish(actions, actions.size(), true);
  co_return Result<void>{};
}

Task<Result<void>> co_run_single_action(std::unique_ptr<Action> action) {
  std::vector<std::unique_ptr<Action>> actions;
  actions.push_back(std::move(action));
  co_return co_await co_run_actions(std::move(actions));
}

Task<Result<json>> co_transaction(QmpContext& ctx, json args) {
  TransactionOptions options;
  if (auto p = args.find("properties"); p != args.end()) {
    options.grouped = p->value("completion-mode", "individual") == "grouped";
  }
  if (options.grouped) options.job_txn = ctx.engine().jobs().new_txn();
  const auto& registry = ctx.registry();
  std::vector<std::unique_ptr<Action>> actions;
  for (auto& entry : args["actions"]) {
    const std::string& type = entry["type"].get_ref<const std::string&>();
    const ActionSpec* spec = registry.find_action(type);
    if (!spec) co_return invalid_parameter_value("type", type);
    if (options.grouped && !spec->supports_grouped) {
      co_return Error{EINVAL, "Action '" + type +
                                  "' does not support Transaction property completion-mode = "
                                  "grouped"};
    }
    actions.push_back(spec->create(ctx, std::move(entry["data"]), options));
  }
  co_await co_drain_everything(ctx);
  auto r = co_await co_run_actions(std::move(actions));
  if (!r) co_return std::move(r).error();
  co_return json::object();
}

void register_transaction_command(CommandRegistry& registry) {
  registry.schema().add_object("Abort", {});
  // qemu-storage-daemon accepts `abort` in grouped transactions too.
  registry.add_action({"abort", "Abort", true, make_abort});
  registry.add(
      {.name = "transaction",
       .args = {{"actions", "[TransactionAction]"}, {"properties", "TransactionProperties", true}},
       .handler = co_transaction});
}

}  // namespace strata::qmp
