// TLS for NBD with OpenSSL: server credentials laid out as QEMU's
// tls-creds-x509 and tls-creds-psk objects, and a Channel that runs TLS over
// a socket through memory BIOs.
//
// Contract: TlsCreds::load_x509 reads ca-cert.pem (optional unless
// verify_peer), server-cert.pem and server-key.pem from `dir`;
// TlsCreds::load_psk reads `dir`/keys.psk, lines "identity:hexkey", and
// accepts any identity listed there (QEMU's server does the same). TLS 1.2
// is the minimum version. co_start_tls() replaces the plain channel in
// `slot` by a Channel that encrypts and decrypts, then runs the server
// handshake on it: the TLS channel is in the slot while the handshake runs,
// so whoever owns the slot can close it (a client that stalls mid-handshake
// is dropped by the handshake timeout). A failed handshake is an error (the
// caller then drops the connection).
// Thread rules: credentials are immutable after loading and may be shared
// by connections; a TLS channel is loop-thread only.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "nbd/channel.h"

typedef struct ssl_ctx_st SSL_CTX;

namespace strata::nbd {

class TlsCreds {
 public:
  static Result<std::shared_ptr<TlsCreds>> load_x509(const std::string& dir, bool verify_peer);
  static Result<std::shared_ptr<TlsCreds>> load_psk(const std::string& dir,
                                                    const std::string& username);
  ~TlsCreds();
  TlsCreds(const TlsCreds&) = delete;
  TlsCreds& operator=(const TlsCreds&) = delete;

  SSL_CTX* ctx() const { return ctx_; }
  // identity -> key bytes, for PSK credentials.
  bool psk_key(const std::string& identity, std::string* key) const;

  // QEMU's tls-authz: once a server handshake is done, the client's name
  // must be allowed: the subject of its certificate (X.509 with
  // verify-peer, as "C=GB,O=...,CN=..." in the certificate's order, as the
  // GnuTLS behind qemu-nbd prints it; without verify-peer nothing is
  // checked, as in QEMU) or its PSK identity. Set before the credentials
  // are shared.
  using Authorizer = std::function<bool(const std::string& peer)>;
  void set_authorizer(Authorizer authorizer) { authorizer_ = std::move(authorizer); }
  const Authorizer& authorizer() const { return authorizer_; }
  bool is_psk() const { return !psk_keys_.empty(); }
  bool verify_peer() const { return verify_peer_; }

 private:
  TlsCreds() = default;
  SSL_CTX* ctx_ = nullptr;
  std::vector<std::pair<std::string, std::string>> psk_keys_;
  Authorizer authorizer_;
  bool verify_peer_ = false;
};

// `slot` must hold a PlainChannel; on return it holds the TLS channel.
Task<Result<void>> co_start_tls(std::shared_ptr<TlsCreds> creds, std::unique_ptr<Channel>& slot);

// Client side (the NBD client driver): the handshake as a client with the
// caller's client context, shared so that it outlives the channel. A
// non-empty `hostname` is sent as SNI and, when the context verifies peers,
// must match the server's certificate.
Task<Result<std::unique_ptr<Channel>>> co_start_tls_client(std::shared_ptr<SSL_CTX> ctx,
                                                           std::unique_ptr<Stream> stream,
                                                           std::string hostname);

}  // namespace strata::nbd
