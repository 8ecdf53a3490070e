// Schema types of the block commands (BlockdevOptions generated from the
// driver registry, BlockDeviceInfo, BlockStats, BlockdevCreateOptions).
// Thread rules: loop-thread only, at registration time.
#pragma once

#include "qmp/schema.h"

#include "strata/engine.h"

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
// the types of BlockdevOptions, or JSON when it starts with '{'. As QEMU, a
// file named without a protocol driver gets the one its name calls for
// (`file.driver`), and a top-level `filename` becomes the `file` child. Not
// validated here: opening the node checks the options and reports them.
Result<nlohmann::json> parse_image_options(const DriverRegistry& drivers, const std::string& text);
// The same, and without `driver` the format is probed from the file, as
// QEMU opens such options (qemu-img, qemu-nbd --image-opts).
Task<Result<nlohmann::json>> co_parse_image_options(Engine& engine, const std::string& text);

}  // namespace strata::qmp
