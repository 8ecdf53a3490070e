// Transactions: all-or-nothing groups of actions (QMP `transaction`).
//
// Contract: the runner creates each action from its validated data and
// calls co_prepare() in order. If every prepare succeeds, co_commit() runs
// for all of them, then co_clean(); if one fails, co_abort() runs for it and
// every action before it, then co_clean() for all, and the transaction
// returns that first error. As in QEMU, commit, abort and clean visit the
// actions newest first. An action's prepare does all the work that can
// fail and leaves the graph so that abort can restore it exactly; commit
// must not fail; clean releases what prepare took (drained sections, ...)
// whatever the outcome. abort and clean are called even for an action
// whose prepare failed half-way.
//
// How another area adds an action (see also qmp/registry.h):
//
//   class BitmapAddAction final : public Action {
//    public:
//     BitmapAddAction(QmpContext& ctx, json data) : ctx_(ctx), data_(std::move(data)) {}
//     Task<Result<void>> co_prepare() override { ... }
//     Task<void> co_abort() override { ... }
//    ...
//   };
//   std::unique_ptr<Action> make_bitmap_add(QmpContext& ctx, json data,
//                                           const TransactionOptions&) {
//     return std::make_unique<BitmapAddAction>(ctx, std::move(data));
//   }
//   registry.add_action({"block-dirty-bitmap-add", "BlockDirtyBitmapAdd", false,
//                        make_bitmap_add});
//
// The standalone command of the same name can run the action alone with
// co_run_single_action(), which is what QEMU does for blockdev-snapshot.
// Thread rules: loop-thread only.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "qmp/registry.h"
#include "strata/result.h"
#include "strata/task.h"

namespace strata::qmp {

class Action {
 public:
  virtual ~Action() = default;
  virtual Task<Result<void>> co_prepare() = 0;
  virtual Task<void> co_commit() { co_return; }
  virtual Task<void> co_abort() { co_return; }
  virtual Task<void> co_clean() { co_return; }
};

// Runs `actions` as one transaction (see the contract above).
Task<Result<void>> co_run_actions(std::vector<std::unique_ptr<Action>> actions);

// Runs one action as a transaction of its own.
Task<Result<void>> co_run_single_action(std::unique_ptr<Action> action);

// The `transaction` command handler and the `abort` action.
Task<Result<json>> co_transaction(QmpContext& ctx, json args);
void register_transaction_command(CommandRegistry& registry);

}  // namespace strata::qmp
