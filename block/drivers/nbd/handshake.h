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

}  // namespace strata::nbdc
