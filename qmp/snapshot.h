// Image creation for blockdev-snapshot-sync (qmp/snapshot_create.cc):
// creates `path` as a `format` image the size of `backing`, naming
// backing's file and format as its backing file.
// Thread rules: loop-thread only.
#pragma once

#include <string>

#include "block/core/node.h"
#include "strata/engine.h"

namespace strata::qmp {

Task<Result<void>> co_create_overlay_image(Engine& engine, std::string path, std::string format,
                                           Node& backing);

}  // namespace strata::qmp
