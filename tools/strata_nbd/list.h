// strata-nbd -L: lists the exports of an NBD server as qemu-nbd -L does
// (names, descriptions, sizes, flags, block sizes, meta contexts), through
// Strata's NBD client, over the -k socket or -b/-p address, with TLS when
// --tls-creds names client credentials (the server name checked is the
// -b address, "localhost" by default, as qemu-nbd).
// Thread rules: runs its own engine on the calling thread.
#pragma once

#include "strata_nbd/options.h"

namespace strata::tools::nbd_tool {

// The process exit status.
int run_list(const Options& options);

}  // namespace strata::tools::nbd_tool
