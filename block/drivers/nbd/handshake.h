// The client side of the NBD fixed newstyle handshake: STARTTLS when asked,
// extended headers (else structured replies), one meta context
// (base:allocation or qemu:dirty-bitmap:NAME), then GO with a block-size
// request; servers without GO get EXPORT_NAME.
//
// Contract: co_client_handshake() either returns the channel in
// transmission phase with what the server told about the export, or an
// error; every length read from the server is bounded before anything is
// allocated for it. Oldstyle servers are refused.
// Thread rules: loop-thread only.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "nbd/channel.h"

namespace strata::nbdc {

// What the server said about the export.
struct ExportInfo {
  uint64_t size = 0;
  uint16_t flags = 0;      // transmission flags
  uint32_t min_block = 1;  // block size constraints (INFO_BLOCK_SIZE)
  uint32_t pref_block = 4096;
  uint32_t max_block = 32u << 20;
  bool structured = false;   // structured replies negotiated
  bool extended = false;     // extended headers negotiated
  bool has_context = false;  // the requested meta context was granted
  uint32_t context_id = 0;
};

// Runs TLS over a socket (client side), checking the server's name.
using StartTls =
    std::function<Task<Result<std::unique_ptr<nbd::Channel>>>(std::unique_ptr<Stream>)>;

struct HandshakeParams {
  std::string export_name;
  std::string meta_context;  // empty: none
  StartTls start_tls;        // null: no TLS
};

struct Negotiated {
  std::unique_ptr<nbd::Channel> channel;
  ExportInfo info;
};

Task<Result<Negotiated>> co_client_handshake(std::unique_ptr<Stream> stream,
                                             const HandshakeParams& params);

// One export as a server lists it (qemu-nbd --list): LIST's name and
// description, INFO's size, flags and block sizes (has_info false when the
// server refuses INFO; block sizes 0 when it sends none), and the meta
// contexts LIST_META_CONTEXT gives with structured replies.
struct ListedExport {
  std::string name;
  std::string description;
  bool has_info = false;
  uint64_t size = 0;
  uint16_t flags = 0;
  uint32_t min_block = 0, pref_block = 0, max_block = 0;
  std::vector<std::string> contexts;
};

// QEMU's nbd_receive_export_list: the greeting (TLS when `start_tls` is
// set), structured replies, LIST, then INFO and LIST_META_CONTEXT for each
// export, and ABORT. A server that knows only EXPORT_NAME is refused
// ("Server does not support export lists").
Task<Result<std::vector<ListedExport>>> co_list_exports(std::unique_ptr<Stream> stream,
                                                        StartTls start_tls);

}  // namespace strata::nbdc
