// The copy loop of strata-img convert (also used by commit/rebase later).
#pragma once

#include "strata_img/common.h"

namespace strata::img {

struct ConvertPlan {
  bool compress = false;
  bool out_of_order = false;  // -W
  bool target_has_backing = false;
  int parallel = 8;             // -m
  uint64_t sparse_size = 4096;  // -S; 0: the target is fully allocated
  uint64_t cluster_size = 0;    // target cluster size (compressed writes)
  uint64_t rate_limit = 0;      // -r: bytes written per second, 0: no limit
  bool salvage = false;         // --salvage: unreadable sectors become zeroes
  bool quiet = false;           // -q (salvage warnings)
};

// An internal snapshot named by -l (convert, measure): ID_OR_NAME, or
// snapshot.id=ID,snapshot.name=NAME.
struct SnapshotParam {
  std::string id_or_name;
  std::string id, name;
  bool keyed = false;
  bool given() const { return keyed || !id_or_name.empty(); }
};
// Parses a -l argument; prints qemu-img's messages and returns false when
// it is not well formed.
bool parse_snapshot_param(const std::string& text, SnapshotParam* out);
// Shows the snapshot in place of `src`'s active layer (the node must be
// read-only); an ID_OR_NAME is looked up as an ID first, then as a name.
Task<Result<void>> co_load_snapshot(Node* src, const SnapshotParam& snapshot);

// Copies all of `src` (through its backing chain) into `dst`, then flushes.
Task<Result<void>> co_copy_image(Engine& engine, const ConvertPlan& plan, Node* src, Child* dst,
                                 bool dst_zeroed, Progress* progress);

}  // namespace strata::img
