// Request checks, negotiation, lookup, validation, execution, envelopes.
#include "qmp/dispatcher.h"

#include <sys/time.h>

#include <cstdio>

#include "qmp/context.h"
#include "qmp/errors.h"
#include "qmp/utf8.h"

namespace strata::qmp {

using nlohmann::json;

namespace {

// QEMU's error hints (printed on a line of their own by its tools) are not
// part of a QMP error's desc; Strata's image-lock errors carry theirs after
// ": " (block/core/image_lock.h).
std::string without_hints(std::string desc) {
  static const std::string kLockHint = ": Is another process using the image [";
  for (size_t at = desc.find(kLockHint); at != std::string::npos; at = desc.find(kLockHint, at)) {
    size_t end = desc.find("]?", at);
    desc.erase(at, end == std::string::npos ? std::string::npos : end + 2 - at);
  }
  return desc;
}

json error_body(ErrorClass cls, const std::string& desc) {
  return {{"class", error_class_name(cls)}, {"desc", without_hints(desc)}};
}

json error_response(ErrorClass cls, const std::string& desc, const json* id) {
  json r = {{"error", error_body(cls, desc)}};
  if (id) r["id"] = *id;
  return r;
}

// QEMU's qmp_dispatch_check_obj: only execute, exec-oob (with the oob
// capability), arguments and id.
std::optional<std::string> check_envelope(const json& request, bool oob_enabled) {
  for (auto it = request.begin(); it != request.end(); ++it) {
    const std::string& key = it.key();
    if (key == "exec-oob" && !oob_enabled) return "QMP input member 'exec-oob' is unexpected";
    if (key == "execute" || key == "exec-oob") {
      if (!it->is_string()) return "QMP input member '" + key + "' must be a string";
    } else if (key == "arguments") {
      if (!it->is_object()) return "QMP input member 'arguments' must be an object";
    } else if (key != "id") {
      return "QMP input member '" + key + "' is unexpected";
    }
  }
  bool has_exec = request.contains("execute");
  bool has_oob = request.contains("exec-oob");
  if (has_exec && has_oob) {
    return "QMP input member 'execute' and 'exec-oob' are mutually exclusive";
  }
  if (!has_exec && !has_oob) return "QMP input lacks member 'execute'";
  return std::nullopt;
}

Result<json> negotiate(Session& session, const json& args) {
  if (auto it = args.find("enable"); it != args.end()) {
    for (const auto& cap : *it) {
      if (cap == "oob") session.oob = true;
    }
  }
  session.negotiated = true;
  return json::object();
}

Task<Result<json>> co_execute(QmpContext& ctx, Session& session, const std::string& name, json args,
                              bool oob) {
  const CommandSpec* spec = ctx.registry().find(name);
  if (!session.negotiated && name != "qmp_capabilities") {
    co_return class_error(ErrorClass::kCommandNotFound,
                          "Expecting capabilities negotiation with 'qmp_capabilities'");
  }
  if (session.negotiated && name == "qmp_capabilities") {
    co_return class_error(ErrorClass::kCommandNotFound,
                          "Capabilities negotiation is already complete, command ignored");
  }
  if (!spec) {
    co_return class_error(ErrorClass::kCommandNotFound,
                          "The command " + name + " has not been found");
  }
  if (oob) co_return Error{EINVAL, "The command " + name + " does not support OOB"};
  STRATA_CO_TRY(ctx.registry().validate_arguments(*spec, args));
  if (name == "qmp_capabilities") co_return negotiate(session, args);
  auto guard = co_await ctx.command_lock().co_scoped_lock();
  co_return co_await spec->handler(ctx, std::move(args));
}

}  // namespace

Task<Result<json>> co_execute_command(QmpContext& ctx, std::string name, json args) {
  const CommandSpec* spec = ctx.registry().find(name);
  if (!spec) {
    co_return class_error(ErrorClass::kCommandNotFound,
                          "The command " + name + " has not been found");
  }
  STRATA_CO_TRY(ctx.registry().validate_arguments(*spec, args));
  auto guard = co_await ctx.command_lock().co_scoped_lock();
  co_return co_await spec->handler(ctx, std::move(args));
}

Task<json> co_dispatch(QmpContext& ctx, Session& session, JsonMessage message) {
  if (!message.value) co_return error_response(ErrorClass::kGenericError, message.error, nullptr);
  json& request = *message.value;
  if (!request.is_object()) {
    co_return error_response(ErrorClass::kGenericError, "QMP input must be a JSON object", nullptr);
  }
  const json* id = request.contains("id") ? &request["id"] : nullptr;
  if (auto bad = check_envelope(request, session.oob)) {
    co_return error_response(ErrorClass::kGenericError, *bad, id);
  }
  bool oob = request.contains("exec-oob");
  std::string name = request[oob ? "exec-oob" : "execute"].get<std::string>();
  json args = request.contains("arguments") ? request["arguments"] : json::object();
  auto result = co_await co_execute(ctx, session, name, std::move(args), oob);
  if (!result) {
    co_return error_response(error_class_of(result.error()), result.error().message, id);
  }
  json response = {{"return", std::move(*result)}};
  if (id) response["id"] = *id;
  co_return response;
}

json version_info() {
  return {{"qemu", {{"major", 10}, {"minor", 1}, {"micro", 0}}},
          {"package", std::string("strata ") + STRATA_VERSION}};
}

json greeting() {
  return {{"QMP", {{"version", version_info()}, {"capabilities", json::array({"oob"})}}}};
}

json make_event(const std::string& name, const json& data) {
  json event = {{"event", name}};
  if (!data.is_null()) event["data"] = data;
  timeval tv{};
  if (gettimeofday(&tv, nullptr) == 0) {
    event["timestamp"] = {{"seconds", static_cast<int64_t>(tv.tv_sec)},
                          {"microseconds", static_cast<int64_t>(tv.tv_usec)}};
  } else {
    event["timestamp"] = {{"seconds", -1}, {"microseconds", -1}};
  }
  return event;
}

namespace {

void put_escape(std::string& out, int32_t unit) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "\\u%04X", static_cast<unsigned>(unit));
  out += buf;
}

// One decoded character as QEMU's JSON output writes it: ASCII stays,
// the usual escapes, everything else \uXXXX (a surrogate pair beyond the
// BMP); an invalid sequence is one U+FFFD for the bytes QEMU counts.
void put_char(std::string& out, int32_t cp) {
  switch (cp) {
    case '"':
      out += "\\\"";
      return;
    case '\\':
      out += "\\\\";
      return;
    case '\b':
      out += "\\b";
      return;
    case '\f':
      out += "\\f";
      return;
    case '\n':
      out += "\\n";
      return;
    case '\r':
      out += "\\r";
      return;
    case '\t':
      out += "\\t";
      return;
    default:
      break;
  }
  if (cp < 0) cp = 0xfffd;
  if (cp > 0xffff) {
    put_escape(out, 0xd800 + ((cp - 0x10000) >> 10));
    put_escape(out, 0xdc00 + ((cp - 0x10000) & 0x3ff));
  } else if (cp < 0x20 || cp >= 0x7f) {
    put_escape(out, cp);
  } else {
    out.push_back(static_cast<char>(cp));
  }
}

void write_string(std::string& out, const std::string& s) {
  out.push_back('"');
  std::string_view rest(s);
  while (!rest.empty()) {
    size_t length = 0;
    int32_t cp = decode_mod_utf8(rest, &length);
    put_char(out, cp);
    rest.remove_prefix(length);
  }
  out.push_back('"');
}

// Doubles as QEMU prints them ("%.17g": 1500, 1e+20, 0.10000000000000001).
void write_double(std::string& out, double d) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.17g", d);
  out += buf;
}

void write_value(std::string& out, const json& v) {
  switch (v.type()) {
    case json::value_t::object: {
      out.push_back('{');
      bool first = true;
      for (auto it = v.begin(); it != v.end(); ++it) {
        if (!first) out += ", ";
        first = false;
        write_string(out, it.key());
        out += ": ";
        write_value(out, it.value());
      }
      out.push_back('}');
      break;
    }
    case json::value_t::array: {
      out.push_back('[');
      for (size_t i = 0; i < v.size(); i++) {
        if (i) out += ", ";
        write_value(out, v[i]);
      }
      out.push_back(']');
      break;
    }
    case json::value_t::string:
      write_string(out, v.get_ref<const std::string&>());
      break;
    case json::value_t::number_float:
      write_double(out, v.get<double>());
      break;
    default:
      out += v.dump(-1, ' ', true, json::error_handler_t::replace);
      break;
  }
}

}  // namespace

std::string to_qmp_text(const json& value) {
  std::string out;
  write_value(out, value);
  return out;
}

}  // namespace strata::qmp
