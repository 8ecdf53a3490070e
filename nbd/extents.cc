#include "nbd/extents.h"

#include <algorithm>

#include "nbd/protocol.h"

namespace strata::nbd {

Task<Result<ChainStatus>> co_chain_status(Child* root, uint64_t offset, uint64_t bytes) {
  return co_block_status_above(*root->node(), nullptr, offset, bytes, root);
}

uint32_t allocation_flags(const ChainStatus& st) {
  uint32_t flags = 0;
  if (!(st.flags & kStatusData)) flags |= kStateHole;
  if (st.flags & kStatusZero) flags |= kStateZero;
  return flags;
}

bool append_extent(std::vector<Extent>& out, uint64_t length, uint32_t value, size_t max_extents) {
  if (!out.empty() && out.back().flags == value) {
    out.back().length += length;
    return true;
  }
  if (out.size() >= max_extents) return false;
  out.push_back({length, value});
  return true;
}

Task<Result<std::vector<Extent>>> co_status_extents(Child* root, ExtentKind kind, uint64_t offset,
                                                    uint64_t length, size_t max_extents) {
  std::vector<Extent> out;
  uint64_t end = offset + length;
  for (uint64_t pos = offset; pos < end;) {
    auto st = co_await co_chain_status(root, pos, end - pos);
    if (!st) co_return std::move(st).error();
    uint64_t len = std::min(st->bytes, end - pos);
    uint32_t value = kind == ExtentKind::kAllocation ? allocation_flags(*st) : st->depth;
    if (!append_extent(out, len, value, max_extents)) break;
    pos += len;
  }
  co_return out;
}

std::vector<Extent> bitmap_extents(const BitmapView& bitmap, uint64_t offset, uint64_t length,
                                   size_t max_extents) {
  std::vector<Extent> out;
  uint64_t end = offset + length;
  for (uint64_t pos = offset; pos < end;) {
    auto [dirty, len] = bitmap.run(pos, end - pos);
    len = std::min(std::max<uint64_t>(len, 1), end - pos);
    if (!append_extent(out, len, dirty ? kStateDirty : 0, max_extents)) break;
    pos += len;
  }
  return out;
}

}  // namespace strata::nbd
