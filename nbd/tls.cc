#include "nbd/tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <cstring>
#include <fstream>

namespace strata::nbd {

namespace {
constexpr size_t kReadChunk = 64 * 1024;
constexpr size_t kCoalesceLimit = 64 * 1024;

std::string ssl_errors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown TLS error" : out;
}

bool file_exists(const std::string& path) {
  return std::ifstream(path).good();
}

Result<std::string> decode_hex(const std::string& hex) {
  if (hex.size() % 2) return Error{EINVAL, "odd-length hex key"};
  std::string out;
  for (size_t i = 0; i < hex.size(); i += 2) {
    char pair[3] = {hex[i], hex[i + 1], 0};
    char* end = nullptr;
    long v = std::strtol(pair, &end, 16);
    if (end != pair + 2) return Error{EINVAL, "invalid hex key"};
    out.push_back(static_cast<char>(v));
  }
  return out;
}

void record_psk_identity(SSL* ssl, const char* identity);

unsigned int psk_server_cb(SSL* ssl, const char* identity, unsigned char* psk,
                           unsigned int max_psk_len) {
  auto* creds = static_cast<const TlsCreds*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  std::string key;
  if (!creds || !identity || !creds->psk_key(identity, &key) || key.size() > max_psk_len) return 0;
  record_psk_identity(ssl, identity);
  std::memcpy(psk, key.data(), key.size());
  return static_cast<unsigned int>(key.size());
}

SSL_CTX* new_server_ctx() {
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) return nullptr;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  return ctx;
}
}  // namespace

TlsCreds::~TlsCreds() {
  if (ctx_) SSL_CTX_free(ctx_);
}

bool TlsCreds::psk_key(const std::string& identity, std::string* key) const {
  for (const auto& [name, k] : psk_keys_) {
    if (name == identity) {
      *key = k;
      return true;
    }
  }
  return false;
}

Result<std::shared_ptr<TlsCreds>> TlsCreds::load_x509(const std::string& dir, bool verify_peer) {
  std::shared_ptr<TlsCreds> creds(new TlsCreds);
  creds->ctx_ = new_server_ctx();
  if (!creds->ctx_) return Error{ENOMEM, "Cannot create TLS context: " + ssl_errors()};
  std::string ca = dir + "/ca-cert.pem";
  std::string cert = dir + "/server-cert.pem";
  std::string key = dir + "/server-key.pem";
  for (const auto& f : {cert, key}) {
    if (!file_exists(f)) return Error{ENOENT, "Unable to access credentials " + f};
  }
  if (SSL_CTX_use_certificate_chain_file(creds->ctx_, cert.c_str()) != 1) {
    return Error{EINVAL, "Cannot load certificate " + cert + ": " + ssl_errors()};
  }
  if (SSL_CTX_use_PrivateKey_file(creds->ctx_, key.c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(creds->ctx_) != 1) {
    return Error{EINVAL, "Cannot load private key " + key + ": " + ssl_errors()};
  }
  if (file_exists(ca)) {
    if (SSL_CTX_load_verify_locations(creds->ctx_, ca.c_str(), nullptr) != 1) {
      return Error{EINVAL, "Cannot load CA certificate " + ca + ": " + ssl_errors()};
    }
  } else if (verify_peer) {
    return Error{ENOENT, "Unable to access credentials " + ca};
  }
  creds->verify_peer_ = verify_peer;
  if (verify_peer) {
    SSL_CTX_set_verify(creds->ctx_, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  }
  return creds;
}

Result<std::shared_ptr<TlsCreds>> TlsCreds::load_psk(const std::string& dir,
                                                     const std::string& username) {
  std::shared_ptr<TlsCreds> creds(new TlsCreds);
  std::string path = dir + "/keys.psk";
  std::ifstream in(path);
  if (!in) return Error{ENOENT, "Unable to access credentials " + path};
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    size_t colon = line.find(':');
    if (colon == std::string::npos) return Error{EINVAL, "Malformed line in " + path};
    auto key = decode_hex(line.substr(colon + 1));
    if (!key) return Error{EINVAL, key.error().message + " in " + path};
    creds->psk_keys_.emplace_back(line.substr(0, colon), std::move(*key));
  }
  if (creds->psk_keys_.empty()) return Error{EINVAL, "No keys in " + path};
  (void)username;  // the server accepts every identity listed in keys.psk
  creds->ctx_ = new_server_ctx();
  if (!creds->ctx_) return Error{ENOMEM, "Cannot create TLS context: " + ssl_errors()};
  SSL_CTX_set_cipher_list(creds->ctx_, "PSK:DEFAULT");
  SSL_CTX_set_app_data(creds->ctx_, creds.get());
  SSL_CTX_set_psk_server_callback(creds->ctx_, psk_server_cb);
  return creds;
}

namespace {

// TLS over a Stream through a pair of memory BIOs: ciphertext moves between
// the BIOs and the socket; OpenSSL never touches the socket.
class TlsChannel final : public Channel {
 public:
  // `owner` keeps `ctx` alive; `client` selects the side of the handshake.
  TlsChannel(SSL_CTX* ctx, std::shared_ptr<const void> owner, std::unique_ptr<Stream> stream,
             bool client)
      : owner_(std::move(owner)), stream_(std::move(stream)) {
    ssl_ = SSL_new(ctx);
    BIO* in = BIO_new(BIO_s_mem());
    BIO* out = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl_, in, out);  // the SSL owns both
    in_ = in;
    out_ = out;
    if (client) {
      SSL_set_connect_state(ssl_);
    } else {
      SSL_set_accept_state(ssl_);
    }
    SSL_set_app_data(ssl_, this);
  }
  SSL* ssl() const { return ssl_; }
  // The PSK identity the client gave (the server's PSK callback records it:
  // with TLS 1.3, SSL_get_psk_identity() does not return it).
  const std::string& psk_identity() const { return psk_identity_; }
  void set_psk_identity(std::string identity) { psk_identity_ = std::move(identity); }
  ~TlsChannel() override { SSL_free(ssl_); }

  Task<Result<void>> co_handshake();
  Task<Result<void>> co_read_exact(std::span<uint8_t> buf) override;
  Task<Result<void>> co_write(const IoVec& iov) override;
  void close() override;
  void abort() override { stream_->abort(); }
  bool closed() const override { return stream_->closed(); }
  bool is_tls() const override { return true; }

 private:
  std::string psk_identity_;
  Task<Result<void>> co_flush_out();
  Task<Result<void>> co_fill_in();

  std::shared_ptr<const void> owner_;
  std::unique_ptr<Stream> stream_;
  SSL* ssl_ = nullptr;
  BIO* in_ = nullptr;
  BIO* out_ = nullptr;
  bool shut_ = false;
};

void record_psk_identity(SSL* ssl, const char* identity) {
  if (auto* channel = static_cast<TlsChannel*>(SSL_get_app_data(ssl))) {
    channel->set_psk_identity(identity);
  }
}

// Moves pending ciphertext to the socket. The bytes are taken and queued
// without suspending in between, so output stays in order.
Task<Result<void>> TlsChannel::co_flush_out() {
  size_t pending = BIO_ctrl_pending(out_);
  if (pending == 0) co_return Result<void>{};
  std::vector<uint8_t> data(pending);
  int n = BIO_read(out_, data.data(), static_cast<int>(pending));
  if (n <= 0) co_return Result<void>{};
  data.resize(static_cast<size_t>(n));
  co_return co_await stream_->co_write(std::span<const uint8_t>(data));
}

Task<Result<void>> TlsChannel::co_fill_in() {
  std::vector<uint8_t> buf(kReadChunk);
  auto n = co_await stream_->co_read_some(buf);
  if (!n) co_return std::move(n).error();
  if (*n == 0) co_return Error{ECONNRESET, "connection closed by peer"};
  BIO_write(in_, buf.data(), static_cast<int>(*n));
  co_return Result<void>{};
}

Task<Result<void>> TlsChannel::co_handshake() {
  for (;;) {
    ERR_clear_error();
    int rc = SSL_do_handshake(ssl_);
    int err = rc == 1 ? SSL_ERROR_NONE : SSL_get_error(ssl_, rc);
    STRATA_CO_TRY(co_await co_flush_out());
    if (rc == 1) co_return Result<void>{};
    if (err != SSL_ERROR_WANT_READ) {
      co_return Error{EPROTO, "TLS handshake failed: " + ssl_errors()};
    }
    STRATA_CO_TRY(co_await co_fill_in());
  }
}

Task<Result<void>> TlsChannel::co_read_exact(std::span<uint8_t> buf) {
  size_t done = 0;
  while (done < buf.size()) {
    ERR_clear_error();
    int n = SSL_read(ssl_, buf.data() + done, static_cast<int>(buf.size() - done));
    if (n > 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    int err = SSL_get_error(ssl_, n);
    STRATA_CO_TRY(co_await co_flush_out());
    if (err == SSL_ERROR_ZERO_RETURN) co_return Error{ECONNRESET, "TLS session closed by peer"};
    if (err != SSL_ERROR_WANT_READ) co_return Error{EPROTO, "TLS read failed: " + ssl_errors()};
    STRATA_CO_TRY(co_await co_fill_in());
  }
  co_return Result<void>{};
}

Task<Result<void>> TlsChannel::co_write(const IoVec& iov) {
  if (stream_->closed()) co_return Error{EPIPE, "connection closed"};
  auto write_all = [this](const uint8_t* p, size_t len) -> bool {
    while (len > 0) {
      int n = SSL_write(ssl_, p, static_cast<int>(std::min<size_t>(len, 1 << 30)));
      if (n <= 0) return false;
      p += n;
      len -= static_cast<size_t>(n);
    }
    return true;
  };
  ERR_clear_error();
  bool ok = true;
  if (iov.size() <= kCoalesceLimit) {
    std::vector<uint8_t> whole(iov.size());
    iov.copy_to(0, whole.data(), whole.size());
    ok = write_all(whole.data(), whole.size());
  } else {
    for (const auto& v : iov.entries()) {
      if (!(ok = write_all(static_cast<const uint8_t*>(v.iov_base), v.iov_len))) break;
    }
  }
  if (!ok) co_return Error{EPROTO, "TLS write failed: " + ssl_errors()};
  co_return co_await co_flush_out();
}

void TlsChannel::close() {
  if (!shut_ && !stream_->closed()) {
    shut_ = true;
    SSL_shutdown(ssl_);
    // Best effort close_notify: queue what is pending without waiting.
    size_t pending = BIO_ctrl_pending(out_);
    if (pending > 0) {
      auto data = std::make_shared<std::vector<uint8_t>>(pending);
      BIO_read(out_, data->data(), static_cast<int>(pending));
    }
  }
  stream_->close();
}

}  // namespace

namespace {

// The client's name for tls-authz: its certificate's subject in the
// certificate's own attribute order ("C=GB,O=Example Org,CN=client", UTF-8
// kept, RFC 4514 escapes), as the GnuTLS behind QEMU prints it; or its PSK
// identity.
std::string peer_name(SSL* ssl, bool psk) {
  if (psk) {
    auto* channel = static_cast<TlsChannel*>(SSL_get_app_data(ssl));
    return channel ? channel->psk_identity() : "";
  }
  X509* cert = SSL_get1_peer_certificate(ssl);
  if (!cert) return "";
  BIO* bio = BIO_new(BIO_s_mem());
  X509_NAME_print_ex(bio, X509_get_subject_name(cert), 0,
                     XN_FLAG_RFC2253 & ~XN_FLAG_DN_REV & ~ASN1_STRFLGS_ESC_MSB);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  std::string name(data, size_t(std::max(len, 0L)));
  BIO_free(bio);
  X509_free(cert);
  return name;
}

Result<void> authorize(const TlsCreds& creds, SSL* ssl) {
  if (!creds.authorizer() || (!creds.is_psk() && !creds.verify_peer())) return {};
  std::string peer = peer_name(ssl, creds.is_psk());
  if (peer.empty()) return Error{EACCES, "Cannot check TLS authorization without a peer name"};
  if (creds.authorizer()(peer)) return {};
  return Error{EACCES, std::string("TLS ") + (creds.is_psk() ? "PSK" : "x509") +
                           " authz check for " + peer + " is denied"};
}

}  // namespace

Task<Result<void>> co_start_tls(std::shared_ptr<TlsCreds> creds, std::unique_ptr<Channel>& slot) {
  auto* plain = dynamic_cast<PlainChannel*>(slot.get());
  if (!plain) co_return Error{EPROTO, "STARTTLS on a channel that cannot be upgraded"};
  std::unique_ptr<Stream> stream = plain->release();
  if (!stream) co_return Error{EPIPE, "connection handed over"};
  SSL_CTX* ctx = creds->ctx();
  const TlsCreds& held = *creds;
  auto owned = std::make_unique<TlsChannel>(ctx, std::move(creds), std::move(stream), false);
  TlsChannel* channel = owned.get();
  slot = std::move(owned);
  auto r = co_await channel->co_handshake();
  if (r) r = authorize(held, channel->ssl());
  if (!r) channel->close();
  co_return r;
}

Task<Result<std::unique_ptr<Channel>>> co_start_tls_client(std::shared_ptr<SSL_CTX> ctx,
                                                           std::unique_ptr<Stream> stream,
                                                           std::string hostname) {
  SSL_CTX* raw = ctx.get();
  auto channel = std::make_unique<TlsChannel>(raw, std::move(ctx), std::move(stream), true);
  if (!hostname.empty()) {
    SSL_set_tlsext_host_name(channel->ssl(), hostname.c_str());
    if (SSL_CTX_get_verify_mode(raw) & SSL_VERIFY_PEER)
      SSL_set1_host(channel->ssl(), hostname.c_str());
  }
  auto r = co_await channel->co_handshake();
  if (!r) {
    channel->close();
    co_return std::move(r).error();
  }
  co_return std::unique_ptr<Channel>(std::move(channel));
}

}  // namespace strata::nbd
