#include "nbd/meta_context.h"

#include <algorithm>

namespace strata::nbd {

namespace {
constexpr const char* kBaseAllocation = "base:allocation";
constexpr const char* kAllocationDepth = "qemu:allocation-depth";
constexpr const char* kBitmapPrefix = "qemu:dirty-bitmap:";

bool query_matches(const MetaContext& ctx, const std::string& query, bool list) {
  if (query == ctx.name) return true;
  if (!list) return false;
  switch (ctx.kind) {
    case ContextKind::kBaseAllocation:
      return query == "base:";
    case ContextKind::kAllocationDepth:
      return query == "qemu:";
    case ContextKind::kDirtyBitmap:
      return query == "qemu:" || query == kBitmapPrefix;
  }
  return false;
}
}  // namespace

std::vector<MetaContext> all_contexts(const ContextCatalog& catalog) {
  std::vector<MetaContext> out;
  out.push_back({0, ContextKind::kBaseAllocation, kBaseAllocation, 0});
  if (catalog.allocation_depth) {
    out.push_back({1, ContextKind::kAllocationDepth, kAllocationDepth, 0});
  }
  for (size_t i = 0; i < catalog.bitmaps.size(); i++) {
    out.push_back({static_cast<uint32_t>(2 + i), ContextKind::kDirtyBitmap,
                   kBitmapPrefix + catalog.bitmaps[i], i});
  }
  return out;
}

std::vector<MetaContext> match_contexts(const ContextCatalog& catalog,
                                        const std::vector<std::string>& queries, bool list) {
  std::vector<MetaContext> all = all_contexts(catalog);
  if (list && queries.empty()) return all;
  std::vector<MetaContext> out;
  for (const auto& ctx : all) {
    bool hit = std::any_of(queries.begin(), queries.end(),
                           [&](const std::string& q) { return query_matches(ctx, q, list); });
    if (hit) out.push_back(ctx);
  }
  return out;
}

}  // namespace strata::nbd
