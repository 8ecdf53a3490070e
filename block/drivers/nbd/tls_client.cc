#include "block/drivers/nbd/tls_client.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <cstring>
#include <fstream>

#include "nbd/tls.h"

namespace strata::nbdc {

namespace {

// The OpenSSL context and the PSK it hands out.
struct ClientContext {
  ~ClientContext() {
    if (ctx) SSL_CTX_free(ctx);
  }
  SSL_CTX* ctx = nullptr;
  std::string identity;
  std::string key;
};

std::string openssl_errors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    out += out.empty() ? "" : "; ";
    out += buf;
  }
  return out.empty() ? "unknown TLS error" : out;
}

Result<std::string> unhex(const std::string& hex, const std::string& path) {
  std::string out;
  if (hex.size() % 2) return Error{EINVAL, "Malformed key in " + path};
  for (size_t i = 0; i < hex.size(); i += 2) {
    char pair[3] = {hex[i], hex[i + 1], 0};
    char* end = nullptr;
    long v = std::strtol(pair, &end, 16);
    if (end != pair + 2) return Error{EINVAL, "Malformed key in " + path};
    out.push_back(static_cast<char>(v));
  }
  return out;
}

// The key of `identity` in QEMU's keys.psk ("identity:hexkey" lines).
Result<std::string> read_psk(const std::string& dir, const std::string& identity) {
  std::string path = dir + "/keys.psk";
  std::ifstream in(path);
  if (!in) return Error{ENOENT, "Unable to access credentials " + path};
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    size_t colon = line.find(':');
    if (colon != std::string::npos && line.substr(0, colon) == identity) {
      return unhex(line.substr(colon + 1), path);
    }
  }
  return Error{ENOENT, "Key for username " + identity + " not found in " + path};
}

unsigned int psk_client_cb(SSL* ssl, const char*, char* identity, unsigned int max_identity,
                           unsigned char* psk, unsigned int max_psk) {
  auto* c = static_cast<ClientContext*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  if (!c || c->identity.size() + 1 > max_identity || c->key.size() > max_psk) return 0;
  std::memcpy(identity, c->identity.c_str(), c->identity.size() + 1);
  std::memcpy(psk, c->key.data(), c->key.size());
  return static_cast<unsigned int>(c->key.size());
}

bool readable(const std::string& path) {
  return std::ifstream(path).good();
}

Result<void> load_x509(ClientContext& c, const TlsCredentials& creds) {
  std::string ca = creds.dir + "/ca-cert.pem";
  std::string cert = creds.dir + "/client-cert.pem";
  std::string key = creds.dir + "/client-key.pem";
  if (readable(ca)) {
    if (SSL_CTX_load_verify_locations(c.ctx, ca.c_str(), nullptr) != 1) {
      return Error{EINVAL, "Cannot load CA certificate " + ca + ": " + openssl_errors()};
    }
  } else if (creds.verify_peer) {
    return Error{ENOENT, "Unable to access credentials " + ca};
  }
  if (readable(cert) && readable(key)) {
    if (SSL_CTX_use_certificate_chain_file(c.ctx, cert.c_str()) != 1 ||
        SSL_CTX_use_PrivateKey_file(c.ctx, key.c_str(), SSL_FILETYPE_PEM) != 1) {
      return Error{EINVAL, "Cannot load client certificate " + cert + ": " + openssl_errors()};
    }
  }
  SSL_CTX_set_verify(c.ctx, creds.verify_peer ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nullptr);
  return {};
}

Result<std::shared_ptr<ClientContext>> make_context(const TlsCredentials& creds) {
  auto c = std::make_shared<ClientContext>();
  c->ctx = SSL_CTX_new(TLS_client_method());
  if (!c->ctx) return Error{ENOMEM, "Cannot create TLS context: " + openssl_errors()};
  SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
  SSL_CTX_set_mode(c->ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (creds.type == TlsCredentials::Type::kX509) {
    STRATA_TRY(load_x509(*c, creds));
    return c;
  }
  c->identity = creds.username.empty() ? "qemu" : creds.username;
  STRATA_TRY_ASSIGN(c->key, read_psk(creds.dir, c->identity));
  SSL_CTX_set_cipher_list(c->ctx, "PSK:DEFAULT");
  SSL_CTX_set_app_data(c->ctx, c.get());
  SSL_CTX_set_psk_client_callback(c->ctx, psk_client_cb);
  return c;
}

}  // namespace

Result<StartTls> make_tls_starter(const CredentialStore& store, const std::string& creds_id,
                                  const std::string& hostname) {
  STRATA_TRY_ASSIGN(TlsCredentials creds, store.tls(creds_id));
  if (creds.endpoint != "client") {
    return Error{EINVAL, "Expecting TLS credentials with a client endpoint"};
  }
  STRATA_TRY_ASSIGN(std::shared_ptr<ClientContext> context, make_context(creds));
  std::shared_ptr<SSL_CTX> ctx(context, context->ctx);  // shares ownership of the context
  return StartTls([ctx, hostname](std::unique_ptr<Stream> stream) {
    return nbd::co_start_tls_client(ctx, std::move(stream), hostname);
  });
}

}  // namespace strata::nbdc
