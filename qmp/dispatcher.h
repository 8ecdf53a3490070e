// Dispatcher: turns one parsed QMP message into its response, as QEMU's
// monitor does: input checks ("QMP input must be a JSON object", ...),
// capabilities negotiation, command lookup, generic argument validation,
// execution (one command at a time across monitors) and the
// {"return"}/{"error"} envelope with the request's id.
//
// Contract: never fails; every message gets exactly one response, except
// none is produced when `session` says the monitor is gone. The JSON writer
// renders values the way QEMU does (", " and ": " separators, ASCII only).
// Thread rules: loop-thread only.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "qmp/json_stream.h"
#include "strata/result.h"
#include "strata/task.h"

namespace strata::qmp {

class QmpContext;

struct Session {
  bool negotiated = false;  // qmp_capabilities done
  bool oob = false;         // out-of-band execution enabled
};

Task<nlohmann::json> co_dispatch(QmpContext& ctx, Session& session, JsonMessage message);

// Runs a registered command outside any monitor (the daemon's command line,
// an embedder): lookup, validation, execution under the command lock.
Task<Result<nlohmann::json>> co_execute_command(QmpContext& ctx, std::string name,
                                                nlohmann::json args);

// {"QMP": {"version": ..., "capabilities": ["oob"]}}
nlohmann::json greeting();
// query-version's value: QEMU's version this release is compatible with.
nlohmann::json version_info();

// QEMU's rendering of a JSON value (no trailing newline).
std::string to_qmp_text(const nlohmann::json& value);
// {"event", "data"?, "timestamp": {"seconds", "microseconds"}}
nlohmann::json make_event(const std::string& name, const nlohmann::json& data);

}  // namespace strata::qmp
