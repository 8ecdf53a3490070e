// Writing a complete new refcount structure (refcount table and blocks)
// from refcounts held in memory, for check -r all when the structure on
// disk is damaged (QEMU's rebuild_refcount_structure) and for amend
// refcount_bits=N.
//
// Contract: co_write_refcount_structure() places the new blocks and the new
// table in clusters at or after `first_free` (the caller guarantees that
// nothing there is referenced and that no old metadata is needed there), so
// the old structure stays intact on disk until the header is switched: a
// crash before the switch leaves the image as it was. Only blocks that
// describe at least one cluster in use are written. The counts of the new
// structure's own clusters are included. Fails with ERANGE (nothing
// written) when a count does not fit in the entry width.
// Qcow2Driver::co_install_refcounts() then points the header at the new
// table (and sets the new width) in one synced write and reloads the
// refcounts; the old structure's clusters are free from then on.
// Thread rules: loop-thread only, under the image's metadata lock, with
// every other user of the image drained.
#pragma once

#include <cstdint>
#include <vector>

#include "block/core/node.h"

namespace strata::qcow2 {

struct RefcountStructure {
  uint64_t table_offset = 0;
  uint32_t table_clusters = 0;
};

// Where a new structure goes (pure; co_write_refcount_structure() writes
// it): `counts` extended with the new clusters' own counts, and the table
// (block offsets; 0 for blocks that describe nothing in use).
struct RefcountLayout {
  std::vector<uint64_t> counts;
  std::vector<uint64_t> table;
  RefcountStructure where;
};
Result<RefcountLayout> plan_refcount_structure(std::vector<uint64_t> counts, uint32_t cluster_bits,
                                               uint32_t order, uint64_t first_free);

// `counts[c]`: the refcount host cluster c must get (clusters past the
// vector: 0).
Task<Result<RefcountStructure>> co_write_refcount_structure(Child* file, uint32_t cluster_bits,
                                                            uint32_t order,
                                                            std::vector<uint64_t> counts,
                                                            uint64_t first_free);

}  // namespace strata::qcow2
