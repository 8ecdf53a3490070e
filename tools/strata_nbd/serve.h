// strata-nbd's program: open the image, serve it, exit when told to.
#pragma once

#include "strata_nbd/options.h"

namespace strata::tools::nbd_tool {

// Returns the process exit status.
int run(const Options& options);

}  // namespace strata::tools::nbd_tool
