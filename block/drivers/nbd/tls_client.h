// Client-side TLS for the NBD driver: turns a tls-creds object (looked up by
// id in the graph's CredentialStore) into the StartTls step of the handshake.
//
// Contract: X.509 credentials need ca-cert.pem in their directory (with
// verify-peer, the default) and may hold client-cert.pem/client-key.pem; PSK
// credentials read keys.psk and use the line of `username` ("qemu" when
// unset), as QEMU's client does. Credentials must have endpoint=client.
// Errors name the object and the file at fault.
// Thread rules: loop-thread only; the returned function may run many times
// (reconnects) and shares one OpenSSL context.
#pragma once

#include <string>

#include "block/core/credentials.h"
#include "block/drivers/nbd/handshake.h"

namespace strata::nbdc {

Result<StartTls> make_tls_starter(const CredentialStore& store, const std::string& creds_id,
                                  const std::string& hostname);

}  // namespace strata::nbdc
