// The NBD server and block export QMP commands: nbd-server-start/-stop,
// nbd-server-add/-remove (legacy), block-export-add/-del,
// query-block-exports, the BLOCK_EXPORT_DELETED event, and the
// tls-creds-x509 / tls-creds-psk object types the server's TLS uses.
//
// Contract: one NBD server per QmpContext (a service object), as in QEMU.
// block-export-del returns once removal has started; the export shows
// "shutting-down" until its clients are gone, then BLOCK_EXPORT_DELETED
// is emitted and the id is free. The daemon's shutdown (quit, SIGTERM)
// stops the server and closes every export before the graph closes.
// Thread rules: loop-thread only.
#pragma once

namespace strata::qmp {

class QmpContext;

void register_nbd_commands(QmpContext& ctx);

}  // namespace strata::qmp
