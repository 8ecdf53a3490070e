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

// An --image-opts argument as qemu-img and qemu-io take it: keyval
// (`driver=qcow2,file.filename=x,overlap-check.template=all`) converted to
// the types of BlockdevOptions, or JSON when it starts with '{'. Not
// validated here: opening the node checks the options and reports them.
Result<nlohmann::json> parse_image_options(const DriverRegistry& drivers, const std::string& text);

}  // namespace strata::qmp
