// Handshake: the fixed-newstyle option negotiation of one connection, up to
// the start of transmission (NBD_OPT_GO / NBD_OPT_EXPORT_NAME) or a soft
// disconnect (NBD_OPT_ABORT).
//
// Contract: co_run() answers every option as the spec says (error replies
// where allowed, a returned Error where the connection must be dropped).
// With TLS credentials the server is FORCEDTLS: before STARTTLS only
// STARTTLS and ABORT are served. A successful STARTTLS replaces the channel
// and forgets all negotiated state. On success the client is registered with
// the chosen export (see Export::attach_client).
// Thread rules: loop-thread only.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "nbd/channel.h"
#include "nbd/export.h"
#include "nbd/meta_context.h"
#include "nbd/tls.h"

namespace strata::nbd {

// What the handshake needs from the server.
class HandshakeHost {
 public:
  virtual ~HandshakeHost() = default;
  // An export that is open (not closing), or null.
  virtual Export* find_export(const std::string& name) = 0;
  virtual std::vector<Export*> list_exports() = 0;
  // Null: no TLS (NOTLS mode).
  virtual std::shared_ptr<TlsCreds> tls_creds() = 0;
  virtual bool shutting_down() = 0;
};

// The outcome of a successful negotiation.
struct Session {
  Export* exp = nullptr;
  bool structured = false;
  bool extended = false;
  bool block_size_requested = false;
  std::vector<MetaContext> contexts;
  uint16_t flags = 0;  // transmission flags sent
};

class Handshake {
 public:
  Handshake(HandshakeHost& host, std::unique_ptr<Channel>& channel, ExportClient* client)
      : host_(host), channel_(channel), client_(client) {}

  // nullopt: the client ended the session (ABORT or closed). An Error: drop
  // the connection.
  Task<Result<std::optional<Session>>> co_run();

 private:
  struct Option {
    uint32_t code = 0;
    std::vector<uint8_t> data;
  };
  enum class Next { kContinue, kAbort, kTransmission };

  Task<Result<Option>> co_read_option();
  Task<Result<Next>> co_dispatch(Option& opt);
  Task<Result<void>> co_reply(uint32_t option, uint32_t type, std::span<const uint8_t> data = {});
  Task<Result<void>> co_error(uint32_t option, uint32_t type, const std::string& message);
  Task<Result<Next>> co_export_name(Option& opt);
  Task<Result<Next>> co_info_or_go(Option& opt);
  Task<Result<void>> co_send_infos(uint32_t option, Export& exp,
                                   const std::vector<uint16_t>& infos);
  Task<Result<void>> co_list(Option& opt);
  Task<Result<void>> co_meta_context(Option& opt);
  Task<Result<Next>> co_starttls(Option& opt);
  Task<Result<void>> co_structured_reply(Option& opt);
  Task<Result<void>> co_extended_headers(Option& opt);
  bool enter_export(Export* exp);
  bool tls_required() const { return host_.tls_creds() && !tls_active_; }

  HandshakeHost& host_;
  std::unique_ptr<Channel>& channel_;
  ExportClient* client_;
  bool fixed_ = false;
  bool no_zeroes_ = false;
  bool tls_active_ = false;
  unsigned option_count_ = 0;
  Session session_;
  // Contexts chosen by SET_META_CONTEXT and the export they were for.
  std::string meta_export_;
  bool meta_set_ = false;
};

}  // namespace strata::nbd
