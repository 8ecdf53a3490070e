// Image information as qemu-img info reports it (shared by info and snapshot).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "block/core/node.h"
#include "block/drivers/qcow2/snapshot.h"

namespace strata::img {

nlohmann::ordered_json image_info_json(Node* node);
// The "ID TAG VM SIZE DATE VM CLOCK ICOUNT" table.
std::string snapshot_table_text(const std::vector<qcow2::Snapshot>& snaps);

}  // namespace strata::img
