// Where an NBD client connects: a Unix socket or a TCP host/port, and the
// export name; parsed from QEMU's blockdev options (`server` as a
// SocketAddress, `export`) or from the URI forms QEMU accepts as file names
// (nbd://host[:port]/export, nbd+tcp://..., nbd+unix:///export?socket=PATH,
// and the legacy nbd:unix:PATH[:exportname=E] / nbd:HOST:PORT[:exportname=E]).
//
// Contract: pure functions; every malformed input is an EINVAL error with a
// message naming what is wrong.
// Thread rules: none.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "strata/result.h"

namespace strata::nbdc {

constexpr uint16_t kDefaultPort = 10809;

struct NbdAddress {
  std::string unix_path;  // non-empty: a Unix socket
  std::string host;       // TCP otherwise
  uint16_t port = kDefaultPort;
  std::string export_name;

  bool is_unix() const { return !unix_path.empty(); }
  // QEMU's spelling of the address as a file name (nbd+unix:///e?socket=p).
  std::string uri() const;
  // {"type": "unix", "path": ...} or {"type": "inet", "host": ..., "port": ...}
  nlohmann::json server_json() const;
};

// True if `filename` starts with one of the NBD URI prefixes.
bool is_nbd_filename(const std::string& filename);
Result<NbdAddress> parse_nbd_filename(const std::string& filename);
// `server` is a SocketAddress object (type unix/inet); `export_name` may be empty.
Result<NbdAddress> parse_server_option(const nlohmann::json& server,
                                       const std::string& export_name);

}  // namespace strata::nbdc
