// Image information as qemu-img info reports it (shared by info and snapshot).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "block/core/image_ops.h"
#include "block/core/node.h"

namespace strata::img {

nlohmann::ordered_json image_info_json(Node* node);
// The node's internal snapshots (none for a format without them).
std::vector<SnapshotEntry> snapshots_of(Node* node);
// The "ID TAG VM SIZE DATE VM CLOCK ICOUNT" table.
std::string snapshot_table_text(const std::vector<SnapshotEntry>& snaps);

}  // namespace strata::img
