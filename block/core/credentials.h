// CredentialStore: how block drivers find TLS credentials by object id
// (QEMU's `tls-creds` option) without depending on the control layer that
// holds the objects. The owner of the objects (the QMP object store, or a
// tool's --object parsing) installs a lookup function.
//
// Contract: tls() returns the credentials of object `id`, or ENOENT with
// QEMU's wording when there is no such object or no lookup is installed.
// Thread rules: loop-thread only.
#pragma once

#include <functional>
#include <string>

#include "strata/result.h"

namespace strata {

struct TlsCredentials {
  enum class Type { kX509, kPsk };
  Type type = Type::kX509;
  std::string dir;                  // QEMU's layout: ca-cert.pem, client-*.pem, keys.psk
  std::string endpoint = "client";  // "client" or "server"
  std::string username;             // PSK identity ("qemu" when empty)
  bool verify_peer = true;          // X.509: check the server's certificate
};

class CredentialStore {
 public:
  using Lookup = std::function<Result<TlsCredentials>(const std::string& id)>;
  void set_lookup(Lookup lookup) { lookup_ = std::move(lookup); }
  Result<TlsCredentials> tls(const std::string& id) const {
    if (!lookup_) return Error{ENOENT, "No TLS credentials with id '" + id + "'"};
    return lookup_(id);
  }

 private:
  Lookup lookup_;
};

}  // namespace strata
