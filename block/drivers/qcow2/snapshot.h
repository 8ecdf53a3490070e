// The qcow2 internal snapshot table: parsing and serializing entries.
//
// Contract: parse_snapshot_table() reads `count` entries from the bytes of
// the table and refuses entries that run past it; extra data beyond the
// fields Strata knows is kept and written back unchanged.
// Thread rules: pure values and functions.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "strata/result.h"

namespace strata::qcow2 {

struct Snapshot {
  uint64_t l1_table_offset = 0;
  uint32_t l1_size = 0;
  std::string id;
  std::string name;
  uint32_t date_sec = 0;
  uint32_t date_nsec = 0;
  uint64_t vm_clock_nsec = 0;
  uint64_t vm_state_size = 0;
  uint64_t disk_size = 0;
  bool has_disk_size = false;
  int64_t icount = -1;
  bool has_icount = false;
  std::vector<uint8_t> unknown_extra;  // extra data past the known fields
};

Result<std::vector<Snapshot>> parse_snapshot_table(std::span<const uint8_t> data, uint32_t count);
std::vector<uint8_t> serialize_snapshot_table(const std::vector<Snapshot>& snapshots);

}  // namespace strata::qcow2
