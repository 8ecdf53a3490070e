#include "strata_nbd/list.h"

#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "base/net.h"
#include "block/core/graph.h"
#include "block/drivers/nbd/handshake.h"
#include "block/drivers/nbd/tls_client.h"
#include "strata/engine.h"

namespace strata::tools::nbd_tool {

namespace {

// The TLS credentials objects of the command line, by id.
Result<TlsCredentials> find_credentials(const std::vector<ObjectSpec>& objects,
                                        const std::string& id) {
  for (const auto& o : objects) {
    if (o.props.at("id") != id) continue;
    auto prop = [&](const char* k, const char* d) {
      auto it = o.props.find(k);
      return it == o.props.end() ? std::string(d) : it->second;
    };
    TlsCredentials c;
    if (o.type == "tls-creds-psk") {
      c.type = TlsCredentials::Type::kPsk;
    } else if (o.type != "tls-creds-x509") {
      return Error{EINVAL, "Object with id '" + id + "' is not TLS credentials"};
    }
    c.dir = prop("dir", "");
    c.endpoint = prop("endpoint", "client");
    c.username = prop("username", "");
    std::string verify = prop("verify-peer", "on");
    c.verify_peer = verify == "on" || verify == "yes" || verify == "true";
    return c;
  }
  return Error{ENOENT, "No TLS credentials with id '" + id + "'"};
}

void print_flags(uint16_t flags) {
  static const char* kNames[] = {nullptr,      "readonly", "flush",  "fua",
                                 "rotational", "trim",     "zeroes", "df",
                                 "multi",      "resize",   "cache",  "fast-zero"};
  std::printf("  flags: 0x%x (", flags);
  for (unsigned bit = 0; bit < sizeof kNames / sizeof kNames[0]; bit++) {
    if (kNames[bit] && (flags & (1u << bit))) std::printf(" %s", kNames[bit]);
  }
  std::printf(" )\n");
}

void print(const std::vector<nbdc::ListedExport>& exports) {
  std::printf("exports available: %zu\n", exports.size());
  for (const auto& e : exports) {
    std::printf(" export: '%s'\n", e.name.c_str());
    if (!e.description.empty()) std::printf("  description: %s\n", e.description.c_str());
    if (e.has_info && (e.flags & 1)) {
      std::printf("  size:  %" PRIu64 "\n", e.size);
      print_flags(e.flags);
    }
    if (e.min_block) {
      std::printf("  min block: %u\n  opt block: %u\n  max block: %u\n", e.min_block, e.pref_block,
                  e.max_block);
    }
    if (!e.contexts.empty()) {
      std::printf("  available meta contexts: %zu\n", e.contexts.size());
      for (const auto& c : e.contexts) std::printf("   %s\n", c.c_str());
    }
  }
}

Task<int> co_list(Engine& engine, const Options& o) {
  nbdc::StartTls start_tls;
  if (!o.tls_creds.empty()) {
    std::vector<ObjectSpec> objects = o.objects;
    engine.graph().credentials().set_lookup(
        [objects](const std::string& id) { return find_credentials(objects, id); });
    // As qemu-nbd: the server's certificate is checked against the -b
    // name; over a Unix socket there is none to check it against.
    std::string hostname = o.socket_path.empty() ? o.bind : "";
    auto creds = find_credentials(objects, o.tls_creds);
    if (creds && creds->type == TlsCredentials::Type::kX509 && creds->verify_peer &&
        hostname.empty()) {
      std::fprintf(stderr, "strata-nbd: No hostname for certificate validation\n");
      co_return 1;
    }
    auto starter = nbdc::make_tls_starter(engine.graph().credentials(), o.tls_creds, hostname);
    if (!starter) {
      std::fprintf(stderr, "strata-nbd: %s\n", starter.error().message.c_str());
      co_return 1;
    }
    start_tls = std::move(*starter);
  }
  Result<std::unique_ptr<Stream>> stream = Error{};
  std::string where;
  if (!o.socket_path.empty()) {
    where = o.socket_path;
    stream = co_await co_connect_unix(engine.loop(), o.socket_path);
  } else {
    where = o.bind + ":" + std::to_string(o.port);
    stream = co_await co_connect_tcp(engine.loop(), o.bind, o.port);
  }
  if (!stream) {
    std::fprintf(stderr, "strata-nbd: Failed to connect to '%s': %s\n", where.c_str(),
                 std::strerror(stream.error().code));
    co_return 1;
  }
  auto exports = co_await nbdc::co_list_exports(std::move(*stream), std::move(start_tls));
  if (!exports) {
    std::fprintf(stderr, "strata-nbd: %s\n", exports.error().message.c_str());
    co_return 1;
  }
  print(*exports);
  co_return 0;
}

}  // namespace

int run_list(const Options& o) {
  Engine engine;
  return engine.run(co_list(engine, o));
}

}  // namespace strata::tools::nbd_tool
