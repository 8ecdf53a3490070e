// Image files for commands (qmp/snapshot_create.cc): blockdev-snapshot-
// sync's overlay, created as a `format` image the size of `backing` that
// names backing's file and format as its backing file; and an image file
// opened as a node for a command (the overlay, drive-mirror's target).
// Thread rules: loop-thread only.
#pragma once

#include <string>

#include "block/core/node.h"
#include "strata/engine.h"

namespace strata::qmp {

Task<Result<void>> co_create_overlay_image(Engine& engine, std::string path, std::string format,
                                           Node& backing);

// Opens image `file` as a `format` node as QEMU's bdrv_open does for a
// command (blockdev-snapshot-sync, drive-mirror): the node is not the
// monitor's, and is opened without its backing file unless `with_backing`.
// `name` names it; with `implicit`, an empty name is generated.
// A new image file for drive-mirror and drive-backup's target (QEMU's
// bdrv_img_create for qcow2 and raw): `size` bytes, with `backing`'s file
// and format named as its backing file when given.
Task<Result<void>> co_create_target_image(Engine& engine, const std::string& path,
                                          const std::string& format, uint64_t size, Node* backing);

Task<Result<Node*>> co_open_image_node(Graph& graph, const std::string& file,
                                       const std::string& format, const std::string& name,
                                       bool with_backing, bool implicit);

}  // namespace strata::qmp
