// NBD server and block export commands over nbd::Server, with QEMU's
// argument shapes, checks (in QEMU's order) and messages.
#include "qmp/commands_nbd.h"

#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <memory>

#include "nbd/protocol.h"
#include "nbd/server.h"
#include "qmp/block_lookup.h"
#include "qmp/context.h"
#include "qmp/objects.h"

namespace strata::qmp {

namespace {

constexpr uint64_t kDefaultHandshakeSeconds = 10;

// The NBD server of one QmpContext; null while not started.
class NbdService {
 public:
  explicit NbdService(QmpContext&) {}
  nbd::Server* server() const { return server_.get(); }
  uint32_t max_connections() const { return max_connections_; }

  void started(std::unique_ptr<nbd::Server> server, uint32_t max_connections) {
    server_ = std::move(server);
    max_connections_ = max_connections;
  }
  Task<void> co_stop() {
    if (!server_) co_return;
    co_await server_->co_stop();
    server_.reset();
  }

 private:
  std::unique_ptr<nbd::Server> server_;
  uint32_t max_connections_ = 0;
};

Error not_running() {
  return Error{ENOTCONN, "NBD server not running"};
}

// QEMU's id_wellformed(): a letter, then letters, digits, '-', '.', '_'.
bool id_wellformed(const std::string& id) {
  if (id.empty() || !std::isalpha(static_cast<unsigned char>(id[0]))) return false;
  for (char c : id) {
    bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_';
    if (!ok) return false;
  }
  return true;
}

Result<uint32_t> uint32_argument(const json& args, const char* name, uint32_t fallback) {
  if (!args.contains(name)) return fallback;
  const json& v = args[name];
  bool in_range = v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0);
  if (!in_range || v.get<uint64_t>() > UINT32_MAX) {
    return Error{EINVAL, std::string("Parameter '") + name + "' expects uint32_t"};
  }
  return static_cast<uint32_t>(v.get<uint64_t>());
}

// TLS credentials.

bool is_tls_creds(const std::string& qom_type) {
  return qom_type == "tls-creds-x509" || qom_type == "tls-creds-psk";
}

Result<std::shared_ptr<nbd::TlsCreds>> load_tls_creds(const UserObject& o) {
  std::string dir = o.props.value("dir", "");
  if (o.qom_type == "tls-creds-psk") {
    return nbd::TlsCreds::load_psk(dir, o.props.value("username", ""));
  }
  return nbd::TlsCreds::load_x509(dir, o.props.value("verify-peer", true));
}

// QEMU's nbd_get_tls_creds().
Result<std::shared_ptr<nbd::TlsCreds>> server_tls_creds(QmpContext& ctx, const std::string& id) {
  const UserObject* o = ctx.service<ObjectStore>().find(id);
  if (!o) return Error{ENOENT, "No TLS credentials with id '" + id + "'"};
  if (!is_tls_creds(o->qom_type)) {
    return Error{EINVAL, "Object with id '" + id + "' is not TLS credentials"};
  }
  if (o->props.value("endpoint", "client") != "server") {
    return Error{EINVAL, "Expecting TLS credentials with a server endpoint"};
  }
  return load_tls_creds(*o);
}

// Server credentials are loaded when the object is created, so that a
// missing file is reported by object-add, as QEMU does.
Result<void> check_tls_object(UserObject& o) {
  if (o.props.value("endpoint", "client") != "server") return {};
  STRATA_TRY(load_tls_creds(o));
  return {};
}

// nbd-server-start.

Result<void> listen(nbd::Server& server, const json& addr) {
  std::string type = addr["type"];
  const json& data = addr["data"];
  if (type == "unix") {
    if (data.value("abstract", false)) {
      return Error{ENOTSUP, "Abstract Unix sockets are not supported"};
    }
    return server.listen_unix(data["path"]);
  }
  if (type == "inet") {
    std::string port_text = data["port"];
    char* end = nullptr;
    long port = std::strtol(port_text.c_str(), &end, 10);
    if (port_text.empty() || *end != '\0' || port < 0 || port > 65535) {
      return Error{EINVAL, "Port '" + port_text + "' should be a number"};
    }
    auto bound = server.listen_tcp(data["host"], static_cast<uint16_t>(port));
    if (!bound) return std::move(bound).error();
    return {};
  }
  return Error{ENOTSUP, "Socket address type '" + type + "' is not supported"};
}

Task<Result<json>> co_nbd_server_start(QmpContext& ctx, json args) {
  NbdService& svc = ctx.service<NbdService>();
  if (svc.server()) co_return Error{EEXIST, "NBD server already running"};
  if (args.contains("tls-authz")) {
    co_return Error{ENOTSUP, "tls-authz is not supported (use verify-peer of the credentials)"};
  }
  STRATA_CO_TRY_ASSIGN(uint32_t max_conn, uint32_argument(args, "max-connections", 0));
  STRATA_CO_TRY_ASSIGN(uint32_t handshake_s,
                       uint32_argument(args, "handshake-max-seconds", kDefaultHandshakeSeconds));
  nbd::ServerOptions options;
  options.max_connections = max_conn;
  options.limits.handshake_ms = uint64_t{handshake_s} * 1000;
  if (args.contains("tls-creds")) {
    STRATA_CO_TRY_ASSIGN(options.tls, server_tls_creds(ctx, args["tls-creds"]));
  }
  auto server = std::make_unique<nbd::Server>(ctx.engine(), std::move(options));
  STRATA_CO_TRY(listen(*server, args["addr"]));
  server->set_on_export_deleted([&ctx](const std::string& id) {
    ctx.emit_event("BLOCK_EXPORT_DELETED", {{"id", id}});
  });
  svc.started(std::move(server), max_conn);
  co_return json::object();
}

Task<Result<json>> co_nbd_server_stop(QmpContext& ctx, json) {
  NbdService& svc = ctx.service<NbdService>();
  if (!svc.server()) co_return not_running();
  co_await svc.co_stop();
  co_return json::object();
}

// Exports.

void add_bitmaps(const json& list, nbd::ExportOptions& eo) {
  for (const json& b : list) {
    if (b.is_string()) {
      eo.bitmaps.push_back(b.get<std::string>());
      eo.bitmap_nodes.emplace_back();
    } else {
      eo.bitmaps.push_back(b.value("name", ""));
      eo.bitmap_nodes.push_back(b.value("node", ""));
    }
  }
}

// QEMU's blk_exp_add() followed by nbd_export_create(), for validated
// BlockExportOptions of type nbd.
Result<void> add_export(QmpContext& ctx, const json& a) {
  NbdService& svc = ctx.service<NbdService>();
  std::string id = a["id"];
  if (!id_wellformed(id)) return Error{EINVAL, "Invalid block export id"};
  if (svc.server() && svc.server()->export_by_id(id)) {
    return Error{EEXIST, "Block export id '" + id + "' is already in use"};
  }
  std::string node_name = a["node-name"];
  STRATA_TRY_ASSIGN(Node * node, lookup_bs(ctx.engine().graph(), "", node_name));
  bool writable = a.value("writable", false);
  if (writable && node->read_only()) {
    return Error{EINVAL, "Cannot export read-only node as writable"};
  }
  // Strata runs every export on its one loop thread: there are no iothread
  // objects to name (fixed-iothread alone changes nothing, as in QEMU).
  if (a.contains("iothread")) {
    return Error{ENOENT, "iothread \"" + a["iothread"].get<std::string>() + "\" not found"};
  }
  if (!svc.server()) return not_running();
  nbd::ExportOptions eo;
  eo.id = id;
  eo.name = a.value("name", node_name);
  eo.description = a.value("description", "");
  eo.node_name = node_name;
  eo.writable = writable;
  eo.writethrough = a.value("writethrough", false);
  eo.allocation_depth = a.value("allocation-depth", false);
  eo.multi_conn = svc.max_connections() != 1;
  if (a.contains("bitmaps")) add_bitmaps(a["bitmaps"], eo);
  if (eo.name.size() > nbd::kMaxStringSize) {
    return Error{EINVAL, "export name '" + eo.name + "' too long"};
  }
  if (eo.description.size() > nbd::kMaxStringSize) {
    return Error{EINVAL, "description '" + eo.description + "' too long"};
  }
  STRATA_TRY(svc.server()->add_export(std::move(eo)));
  return {};
}

Task<Result<json>> co_block_export_add(QmpContext& ctx, json args) {
  STRATA_CO_TRY(add_export(ctx, args));
  co_return json::object();
}

// nbd-server-add: the export id is its name; a read-only node is exported
// read-only rather than refused.
Task<Result<json>> co_nbd_server_add(QmpContext& ctx, json args) {
  std::string device = args["device"];
  STRATA_CO_TRY_ASSIGN(Node * node, lookup_bs(ctx.engine().graph(), device, device));
  std::string name = args.value("name", device);
  json a = {{"type", "nbd"},
            {"id", name},
            {"node-name", node->name()},
            {"name", name},
            {"writable", args.value("writable", false) && !node->read_only()}};
  if (args.contains("description")) a["description"] = args["description"];
  if (args.contains("bitmap")) a["bitmaps"] = json::array({args["bitmap"]});
  STRATA_CO_TRY(add_export(ctx, a));
  co_return json::object();
}

nbd::RemoveMode remove_mode(const json& args) {
  return args.value("mode", "safe") == "hard" ? nbd::RemoveMode::kHard : nbd::RemoveMode::kSafe;
}

Result<void> del_export(QmpContext& ctx, const std::string& id, const json& args) {
  nbd::Server* server = ctx.service<NbdService>().server();
  if (!server) return Error{ENOENT, "Export '" + id + "' is not found"};
  return server->begin_remove_export(id, remove_mode(args));
}

Task<Result<json>> co_block_export_del(QmpContext& ctx, json args) {
  STRATA_CO_TRY(del_export(ctx, args["id"], args));
  co_return json::object();
}

Task<Result<json>> co_nbd_server_remove(QmpContext& ctx, json args) {
  STRATA_CO_TRY(del_export(ctx, args["name"], args));
  co_return json::object();
}

Task<Result<json>> co_query_block_exports(QmpContext& ctx, json) {
  json out = json::array();
  nbd::Server* server = ctx.service<NbdService>().server();
  if (!server) co_return out;
  for (nbd::Export* exp : server->exports()) {
    Node* node = exp->node();
    out.push_back({{"id", exp->id()},
                   {"type", "nbd"},
                   {"node-name", node ? node->name() : exp->options().node_name},
                   {"shutting-down", exp->closing()}});
  }
  co_return out;
}

Task<void> co_shutdown_nbd(QmpContext* ctx) {
  co_await ctx->service<NbdService>().co_stop();
}

void declare_socket_types(Schema& s) {
  auto declare = [&s](const std::string& name, std::vector<Member> members) {
    if (!s.has(name)) s.add_object(name, std::move(members));
  };
  declare("InetSocketAddress", {{"host", "str"},
                                {"port", "str"},
                                {"numeric", "bool", true},
                                {"to", "uint16", true},
                                {"ipv4", "bool", true},
                                {"ipv6", "bool", true},
                                {"keep-alive", "bool", true},
                                {"mptcp", "bool", true}});
  declare("UnixSocketAddress",
          {{"path", "str"}, {"abstract", "bool", true}, {"tight", "bool", true}});
  declare("VsockSocketAddress", {{"cid", "str"}, {"port", "str"}});
  declare("String", {{"str", "str"}});
  declare("InetSocketAddressWrapper", {{"data", "InetSocketAddress"}});
  declare("UnixSocketAddressWrapper", {{"data", "UnixSocketAddress"}});
  declare("VsockSocketAddressWrapper", {{"data", "VsockSocketAddress"}});
  declare("StringWrapper", {{"data", "String"}});
  if (!s.has("SocketAddressType")) s.add_enum("SocketAddressType", {"inet", "unix", "vsock", "fd"});
  if (!s.has("SocketAddressLegacy")) {
    s.add_object("SocketAddressLegacy", {{"type", "SocketAddressType"}}, "type",
                 {{"inet", "InetSocketAddressWrapper"},
                  {"unix", "UnixSocketAddressWrapper"},
                  {"vsock", "VsockSocketAddressWrapper"},
                  {"fd", "StringWrapper"}});
  }
}

void declare_export_types(Schema& s) {
  s.add_enum("BlockExportType", {"nbd"});
  s.add_enum("BlockExportRemoveMode", {"safe", "hard"});
  s.add_object("BlockExportOptionsNbd", {{"name", "str", true},
                                         {"description", "str", true},
                                         {"bitmaps", "[BlockDirtyBitmapOrStr]", true},
                                         {"allocation-depth", "bool", true}});
  s.add_object("BlockExportOptions",
               {{"type", "BlockExportType"},
                {"id", "str"},
                {"fixed-iothread", "bool", true},
                {"iothread", "str", true},
                {"node-name", "str"},
                {"writable", "bool", true},
                {"writethrough", "bool", true}},
               "type", {{"nbd", "BlockExportOptionsNbd"}});
  s.add_object("NbdServerAddOptions", {{"name", "str", true},
                                       {"description", "str", true},
                                       {"device", "str"},
                                       {"writable", "bool", true},
                                       {"bitmap", "str", true}});
  s.add_object("BlockExportInfo", {{"id", "str"},
                                   {"type", "BlockExportType"},
                                   {"node-name", "str"},
                                   {"shutting-down", "bool"}});
  s.add_object("q_obj_BLOCK_EXPORT_DELETED-arg", {{"id", "str"}});
}

void declare_tls_objects(QmpContext& ctx) {
  Schema& s = ctx.registry().schema();
  s.add_enum("QCryptoTLSCredsEndpoint", {"client", "server"});
  std::vector<Member> common = {{"verify-peer", "bool", true},
                                {"dir", "str", true},
                                {"endpoint", "QCryptoTLSCredsEndpoint", true},
                                {"priority", "str", true},
                                {"loaded", "bool", true}};
  std::vector<Member> x509 = common;
  x509.push_back({"sanity-check", "bool", true});
  x509.push_back({"passwordid", "str", true});
  std::vector<Member> psk = common;
  psk.push_back({"username", "str", true});
  s.add_object("TlsCredsX509Properties", x509);
  s.add_object("TlsCredsPskProperties", psk);
  add_object_type(ctx, "tls-creds-x509", "TlsCredsX509Properties", check_tls_object);
  add_object_type(ctx, "tls-creds-psk", "TlsCredsPskProperties", check_tls_object);
}

}  // namespace

void register_nbd_commands(QmpContext& ctx) {
  CommandRegistry& r = ctx.registry();
  declare_socket_types(r.schema());
  declare_export_types(r.schema());
  declare_tls_objects(ctx);
  r.add({.name = "nbd-server-start",
         .args = {{"addr", "SocketAddressLegacy"},
                  {"tls-creds", "str", true},
                  {"tls-authz", "str", true},
                  {"max-connections", "uint32", true},
                  {"handshake-max-seconds", "uint32", true}},
         .handler = co_nbd_server_start});
  r.add({.name = "nbd-server-stop", .handler = co_nbd_server_stop});
  r.add({.name = "nbd-server-add", .boxed = "NbdServerAddOptions", .handler = co_nbd_server_add});
  r.add({.name = "nbd-server-remove",
         .args = {{"name", "str"}, {"mode", "BlockExportRemoveMode", true}},
         .handler = co_nbd_server_remove});
  r.add(
      {.name = "block-export-add", .boxed = "BlockExportOptions", .handler = co_block_export_add});
  r.add({.name = "block-export-del",
         .args = {{"id", "str"}, {"mode", "BlockExportRemoveMode", true}},
         .handler = co_block_export_del});
  r.add({.name = "query-block-exports",
         .returns = "[BlockExportInfo]",
         .handler = co_query_block_exports});
  r.add_event({"BLOCK_EXPORT_DELETED", "q_obj_BLOCK_EXPORT_DELETED-arg"});
  ctx.add_shutdown_hook([&ctx] { return co_shutdown_nbd(&ctx); });
}

}  // namespace strata::qmp
