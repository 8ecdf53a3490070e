// Where an NBD client connects: a Unix socket or a TCP host/port, and the
// export name; parsed from QEMU's blockdev options (`server` as a
// SocketAddress, `export`). File names (nbd://host[:port]/export,
// nbd+tcp://..., nbd+unix:///export?socket=PATH, and the legacy
// nbd:unix:PATH[:exportname=E] / nbd:HOST:PORT[:exportname=E]) become such
// options through nbd_filename_options, as QEMU's nbd_parse_filename.
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
  // QEMU's spelling of the address as a file name (nbd+unix:///e?socket=p,
  // nbd://host:port/e; the export name as it is, not escaped).
  std::string uri() const;
  // {"type": "unix", "path": ...} or {"type": "inet", "host": ..., "port": ...}
  nlohmann::json server_json() const;
};

// QEMU's nbd_parse_filename: the options a file name stands for,
// {"server": SocketAddress, "export": name} (export only when named), with
// QEMU's messages ("No valid URL specified", ...).
Result<nlohmann::json> nbd_filename_options(const std::string& filename);
// `server` is a SocketAddress object (type unix/inet); `export_name` may be empty.
Result<NbdAddress> parse_server_option(const nlohmann::json& server,
                                       const std::string& export_name);

}  // namespace strata::nbdc
