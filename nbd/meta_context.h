// Meta contexts an export offers (base:allocation, qemu:allocation-depth,
// qemu:dirty-bitmap:NAME) and the query matching of LIST_META_CONTEXT and
// SET_META_CONTEXT.
//
// Contract: context ids are fixed per export: 0 base:allocation, 1
// qemu:allocation-depth, 2 + i the i-th exported bitmap. LIST honours the
// wildcards "base:", "qemu:" and "qemu:dirty-bitmap:" and an empty query
// list; SET selects exact names only. Unknown namespaces are ignored.
// Thread rules: none (pure functions).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace strata::nbd {

enum class ContextKind { kBaseAllocation, kAllocationDepth, kDirtyBitmap };

struct MetaContext {
  uint32_t id = 0;
  ContextKind kind = ContextKind::kBaseAllocation;
  std::string name;
  size_t bitmap_index = 0;  // kDirtyBitmap: index into the export's bitmaps
};

// What one export can offer.
struct ContextCatalog {
  bool allocation_depth = false;
  std::vector<std::string> bitmaps;
};

std::vector<MetaContext> all_contexts(const ContextCatalog& catalog);
// The contexts `queries` select (LIST: `list` true), without duplicates, in
// catalog order.
std::vector<MetaContext> match_contexts(const ContextCatalog& catalog,
                                        const std::vector<std::string>& queries, bool list);

}  // namespace strata::nbd
