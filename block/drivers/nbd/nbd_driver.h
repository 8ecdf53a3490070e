// nbd: the NBD client protocol driver. A node whose storage is an export on
// an NBD server (Unix socket or TCP, optionally TLS), with QEMU's blockdev
// options: server, export, tls-creds, tls-hostname, reconnect-delay,
// open-timeout, x-dirty-bitmap (and `filename` holding an NBD URI).
//
// Contract: requests map one to one onto NBD commands (READ, WRITE with
// FUA, WRITE_ZEROES with NO_HOLE/FAST_ZERO, TRIM, FLUSH, BLOCK_STATUS with
// REQ_ONE); what the server does not offer is emulated by the dispatcher or
// skipped (flush, trim). The server's block size constraints become the
// node's limits. When the connection drops, a background task reconnects;
// requests wait for it up to reconnect-delay seconds, then fail with EIO
// (as do requests made later while disconnected).
// Thread rules: loop-thread only.
#pragma once

#include "block/core/driver_registry.h"
#include "block/drivers/nbd/address.h"
#include "block/drivers/nbd/connection.h"

namespace strata {

void register_nbd_driver(DriverRegistry& registry);

}  // namespace strata
