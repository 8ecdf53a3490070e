// Schema types of the block commands (BlockdevOptions generated from the
// driver registry, BlockDeviceInfo, BlockStats, BlockdevCreateOptions).
// Thread rules: loop-thread only, at registration time.
#pragma once

#include "qmp/schema.h"

namespace strata {
class DriverRegistry;
}

namespace strata::qmp {

// BlockdevOptions (a flat union on `driver`) and BlockdevRef(OrNull).
void add_blockdev_options_type(Schema& schema, const DriverRegistry& drivers);
// Everything the block commands declare.
void add_block_types(Schema& schema, const DriverRegistry& drivers);

}  // namespace strata::qmp
