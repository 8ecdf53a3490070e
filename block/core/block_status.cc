#include "block/core/block_status.h"

#include <algorithm>

namespace strata {

Node* next_layer(const Node& node) {
  const Node* n = &node;
  while (n && !n->backing() && n->filtered()) n = n->filtered()->node();
  if (!n || !n->backing()) return nullptr;
  return n->backing()->node();
}

Task<Result<ChainStatus>> co_block_status_above(Node& top, Node* base, uint64_t offset,
                                                uint64_t bytes, Child* via) {
  ChainStatus out;
  Node* node = &top;
  Result<BlockStatus> st = BlockStatus{};
  if (via) {
    st = co_await via->co_block_status(offset, bytes);
    node = via->node();  // a pivot may have moved the edge while it waited
  } else {
    st = co_await top.co_block_status(offset, bytes, nullptr);
  }
  for (;;) {
    if (!st) co_return std::move(st).error();
    if (st->bytes == 0) co_return Error{EIO, "block status returned an empty extent"};
    out.flags = st->flags;
    out.bytes = st->bytes;
    out.map_offset = st->map_offset;
    out.map_node = st->map_node;
    if (st->flags & kStatusAllocated) {
      out.depth = out.bottom;
      co_return out;
    }
    Node* below = next_layer(*node);
    if (!below || below == base) co_return out;
    out.bottom++;
    if (offset >= below->size()) {
      out.flags = kStatusZero;
      co_return out;
    }
    node = below;
    st =
        co_await node->co_block_status(offset, std::min(out.bytes, node->size() - offset), nullptr);
  }
}

Task<Result<Allocation>> co_is_allocated_above(Node& top, Node* base, bool include_base,
                                               uint64_t offset, uint64_t bytes) {
  Node* stop = base;
  if (base && include_base) stop = next_layer(*base);
  auto st = co_await co_block_status_above(top, stop, offset, bytes);
  if (!st) co_return std::move(st).error();
  co_return Allocation{st->allocated(), st->bytes};
}

}  // namespace strata
