// CommandRegistry: every QMP command, event and transaction action, declared
// once with typed arguments. The dispatcher validates arguments against the
// declaration (QEMU's messages) before the handler runs, query-commands lists
// the names and query-qmp-schema is generated from the same declarations.
//
// How another area adds its commands (NBD, dirty bitmaps, jobs):
//
//   // nbd/qmp_commands.cc
//   Task<Result<json>> co_nbd_server_stop(QmpContext& ctx, json args) { ... }
//   void register_nbd_commands(CommandRegistry& r) {
//     r.schema().add_enum("NbdServerRemoveMode", {"safe", "hard"});
//     r.add({.name = "nbd-server-stop", .handler = co_nbd_server_stop});
//     r.add({.name = "nbd-server-remove",
//            .args = {{"name", "str"}, {"mode", "NbdServerRemoveMode", true, "safe"}},
//            .handler = co_nbd_server_remove});
//   }
//
// and calls register_nbd_commands() from register_all_commands()
// (qmp/commands.cc), so every Strata daemon and test server gets them.
// Handlers are plain coroutine functions (pass parameters by value); they
// receive validated arguments with declared defaults filled in and return
// the "return" value (json::object() for commands that return nothing) or
// an Error (see qmp/errors.h for classes other than GenericError). State an
// area needs across commands (the NBD server, say) lives in a service object
// owned by the QmpContext (QmpContext::service<T>()), never in globals;
// shutdown work goes in QmpContext::add_shutdown_hook().
// Commands run one at a time across all monitors, as in QEMU.
//
// Transaction actions (qmp/transaction.h) are registered the same way with
// add_action(); the `transaction` command's schema grows with them.
//
// Thread rules: loop-thread only; fill it before serving starts.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "qmp/schema.h"
#include "strata/result.h"
#include "strata/task.h"

namespace strata {
class JobTxn;
}

namespace strata::qmp {

class QmpContext;
class Action;

using CommandHandler = std::function<Task<Result<json>>(QmpContext& ctx, json args)>;

struct CommandSpec {
  std::string name;
  std::vector<Member> args;  // inline argument members, or:
  std::string boxed;         // a named object type that is the whole argument
  std::string returns;       // type of the "return" value; empty: {}
  CommandHandler handler;
};

// Transaction-wide settings an action may need (properties.completion-mode).
// With grouped, the jobs the actions start share one job transaction
// (jobs/job_txn.h), made by the transaction command.
struct TransactionOptions {
  bool grouped = false;
  std::shared_ptr<JobTxn> job_txn;
};

// Builds the state of one action from its validated `data`; the transaction
// then calls its prepare/commit/abort/clean (see qmp/transaction.h).
using ActionFactory = std::function<std::unique_ptr<Action>(QmpContext& ctx, json data,
                                                            const TransactionOptions& options)>;

struct ActionSpec {
  std::string type;               // "blockdev-snapshot", ...
  std::string data_type;          // a named object type for `data`
  bool supports_grouped = false;  // completion-mode=grouped allowed
  ActionFactory create;
};

struct EventSpec {
  std::string name;
  std::string data_type;  // a named object type (empty: no data)
};

class CommandRegistry {
 public:
  CommandRegistry();

  Schema& schema() { return schema_; }
  const Schema& schema() const { return schema_; }

  // Declares a command; a second command with the same name replaces it.
  void add(CommandSpec spec);
  const CommandSpec* find(const std::string& name) const;
  std::vector<std::string> names() const;  // in declaration order

  void add_event(EventSpec spec);
  void add_action(ActionSpec spec);
  const ActionSpec* find_action(const std::string& type) const;

  // Validates the arguments of `command` in place (defaults filled in).
  Result<void> validate_arguments(const CommandSpec& command, json& args) const;
  // The query-qmp-schema answer.
  json introspect() const;

 private:
  void refresh_transaction_type();

  Schema schema_;
  std::vector<CommandSpec> commands_;
  std::map<std::string, size_t> index_;
  std::vector<EventSpec> events_;
  std::vector<ActionSpec> actions_;
};

}  // namespace strata::qmp
