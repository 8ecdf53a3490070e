// Command-line options to graph nodes, listeners, objects and exports.
#include "stratad/startup.h"

#include <cstdlib>

#include "block/core/options.h"
#include "qmp/dispatcher.h"
#include "qmp/keyval.h"

namespace strata::stratad {

using nlohmann::json;

namespace {

Result<json> parse_plain(const std::string& text, const std::string& implied) {
  if (!text.empty() && text[0] == '{') {
    std::string error;
    auto v = qmp::parse_qmp_json(text, &error);
    if (!v) return Error{EINVAL, "JSON parse error, " + error};
    return std::move(*v);
  }
  return qmp::parse_keyval(text, implied);
}

Result<void> only_keys(const json& o, std::initializer_list<const char*> keys) {
  for (auto it = o.begin(); it != o.end(); ++it) {
    bool known = false;
    for (const char* k : keys) known = known || it.key() == k;
    if (!known) return Error{EINVAL, "Invalid parameter '" + it.key() + "'"};
  }
  return {};
}

bool word_is(const json& o, const char* key, const char* def, const char* want) {
  std::string v = o.contains(key) ? o[key].get<std::string>() : def;
  bool b = false;
  if (parse_bool_word(v, &b)) return b == (std::string(want) == "on");
  return v == want;
}

// --nbd-server takes a flat SocketAddress; nbd-server-start a legacy one.
Result<json> nbd_server_arguments(json o) {
  if (!o.contains("addr") || !o["addr"].is_object())
    return Error{EINVAL, "Parameter 'addr' is missing"};
  json addr = o["addr"];
  std::string type = addr.value("type", "");
  addr.erase("type");
  o["addr"] = {{"type", type}, {"data", addr}};
  for (const char* k : {"max-connections", "handshake-max-seconds"}) {
    if (o.contains(k) && o[k].is_string()) {
      o[k] = static_cast<int64_t>(std::strtoll(o[k].get<std::string>().c_str(), nullptr, 10));
    }
  }
  return o;
}

// QemuOpts' old boolean shorthands: "server", "nowait", "wait" alone.
std::string expand_chardev_flags(const std::string& value) {
  std::string out;
  size_t start = 0;
  while (start <= value.size()) {
    size_t end = start;
    while (end < value.size() &&
           !(value[end] == ',' && (end + 1 >= value.size() || value[end + 1] != ','))) {
      end += (value[end] == ',') ? 2 : 1;
    }
    std::string element = value.substr(start, end - start);
    if (element == "server") element = "server=on";
    if (element == "nowait") element = "wait=off";
    if (element == "wait") element = "wait=on";
    if (!out.empty() || start > 0) out += ",";
    out += element;
    start = end + 1;
  }
  return out;
}

}  // namespace

Task<Result<void>> Startup::co_apply(ActionOption option) {
  const std::string& n = option.name;
  if (n == "blockdev") co_return co_await co_blockdev(option.value);
  if (n == "chardev") co_return chardev(option.value);
  if (n == "monitor") co_return monitor(option.value);
  if (n == "object") co_return co_await co_object(option.value);
  if (n == "nbd-server") co_return co_await co_nbd_server(option.value);
  if (n == "export") co_return co_await co_export(option.value);
  co_return Error{EINVAL, "Unknown option '--" + n + "'"};
}

Task<Result<void>> Startup::co_blockdev(std::string value) {
  const auto& schema = ctx_.registry().schema();
  STRATA_CO_TRY_ASSIGN(json options,
                       qmp::parse_option_argument(schema, "BlockdevOptions", value, "driver"));
  auto r = co_await qmp::co_execute_command(ctx_, "blockdev-add", std::move(options));
  if (!r) co_return std::move(r).error();
  co_return Result<void>{};
}

Result<void> Startup::chardev(const std::string& value) {
  STRATA_TRY_ASSIGN(json o, qmp::parse_keyval(expand_chardev_flags(value), "backend"));
  STRATA_TRY(only_keys(o, {"backend", "id", "path", "host", "port", "server", "wait", "ipv4",
                           "ipv6", "nodelay", "telnet"}));
  if (!o.contains("id")) return Error{EINVAL, "Parameter 'id' is missing"};
  std::string id = o["id"].get<std::string>();
  std::string backend = o.value("backend", "");
  if (backend != "socket")
    return Error{EINVAL, "chardev backend '" + backend + "' is not supported"};
  if (chardevs_.count(id)) return Error{EEXIST, "attempt to add duplicate chardev '" + id + "'"};
  if (!word_is(o, "server", "off", "on")) {
    return Error{EINVAL, "chardev '" + id + "': only server sockets (server=on) are supported"};
  }
  if (!word_is(o, "wait", "off", "off")) {
    return Error{EINVAL, "chardev '" + id + "': wait=on is not supported, use wait=off"};
  }
  Chardev c;
  if (o.contains("path")) {
    c.path = o["path"].get<std::string>();
  } else if (o.contains("port")) {
    c.host = o.value("host", "");
    long port = std::strtol(o["port"].get<std::string>().c_str(), nullptr, 10);
    if (port < 0 || port > 65535)
      return Error{EINVAL, "Invalid port '" + o["port"].get<std::string>() + "'"};
    c.port = static_cast<uint16_t>(port);
  } else {
    return Error{EINVAL, "chardev: socket: no host given"};
  }
  chardevs_[id] = c;
  return {};
}

Result<void> Startup::monitor(const std::string& value) {
  STRATA_TRY_ASSIGN(json o, qmp::parse_keyval(value, "chardev"));
  STRATA_TRY(only_keys(o, {"chardev", "mode", "pretty", "id"}));
  if (o.value("mode", "control") != "control") {
    return Error{EINVAL, "Only QMP monitors are supported"};
  }
  if (!o.contains("chardev")) return Error{EINVAL, "Parameter 'chardev' is missing"};
  std::string id = o["chardev"].get<std::string>();
  auto it = chardevs_.find(id);
  if (it == chardevs_.end()) return Error{ENOENT, "chardev \"" + id + "\" not found"};
  if (chardev_in_use_[id]) return Error{EBUSY, "Device '" + id + "' is in use"};
  chardev_in_use_[id] = true;
  const Chardev& c = it->second;
  if (!c.path.empty()) return server_.listen_unix(c.path);
  auto port = server_.listen_tcp(c.host, c.port);
  if (!port) return std::move(port).error();
  return {};
}

Task<Result<void>> Startup::co_object(std::string value) {
  const auto& schema = ctx_.registry().schema();
  STRATA_CO_TRY_ASSIGN(json o,
                       qmp::parse_option_argument(schema, "ObjectOptions", value, "qom-type"));
  auto r = co_await qmp::co_execute_command(ctx_, "object-add", std::move(o));
  if (!r) co_return std::move(r).error();
  co_return Result<void>{};
}

Task<Result<void>> Startup::co_nbd_server(std::string value) {
  if (!ctx_.registry().find("nbd-server-start")) {
    co_return Error{ENOTSUP, "--nbd-server: this build has no NBD server"};
  }
  STRATA_CO_TRY_ASSIGN(json o, parse_plain(value, ""));
  STRATA_CO_TRY_ASSIGN(json args, nbd_server_arguments(std::move(o)));
  auto r = co_await qmp::co_execute_command(ctx_, "nbd-server-start", std::move(args));
  if (!r) co_return std::move(r).error();
  co_return Result<void>{};
}

Task<Result<void>> Startup::co_export(std::string value) {
  const qmp::CommandSpec* spec = ctx_.registry().find("block-export-add");
  if (!spec) co_return Error{ENOTSUP, "--export: this build has no block exports"};
  const auto& schema = ctx_.registry().schema();
  json args;
  if (!spec->boxed.empty()) {
    STRATA_CO_TRY_ASSIGN(args, qmp::parse_option_argument(schema, spec->boxed, value, "type"));
  } else {
    STRATA_CO_TRY_ASSIGN(args, parse_plain(value, "type"));
  }
  auto r = co_await qmp::co_execute_command(ctx_, "block-export-add", std::move(args));
  if (!r) co_return std::move(r).error();
  co_return Result<void>{};
}

}  // namespace strata::stratad
