// Block status through a backing chain (QEMU's bdrv_block_status_above and
// bdrv_is_allocated_above), in one place for the NBD server, strata-img and
// the block jobs.
//
// Contract: the walk asks `top` first and then, for a range no layer has
// decided yet, each layer below in turn: the backing node of the current
// layer, looking through filters (which are not layers of their own), down
// to `base` (exclusive; null: the whole chain). A layer shorter than the
// range reads as zeroes past its end. Results cover a prefix of the range
// asked for, never more, and never an empty one.
// Thread rules: loop-thread only.
#pragma once

#include <cstdint>

#include "block/core/node.h"

namespace strata {

struct ChainStatus {
  // StatusFlag bits of the layer that decided (kStatusAllocated when a
  // layer above `base` allocates the range), or of the last layer asked.
  uint32_t flags = 0;
  uint64_t bytes = 0;
  // The layer that allocates the range: 1 `top`, 2 the layer below, ...;
  // 0 when none above `base` does.
  uint32_t depth = 0;
  // The deepest layer asked (1-based), whatever the answer.
  uint32_t bottom = 1;
  uint64_t map_offset = 0;  // with kStatusOffsetValid (also of an unallocated range)
  Node* map_node = nullptr;

  bool allocated() const { return flags & kStatusAllocated; }
};

// The layer below `node` whose data shows through ranges `node` leaves
// unallocated: its backing node, looking through filters first (null: none).
Node* next_layer(const Node& node);

// Status of [offset, offset + bytes) of `top` down to `base` (see the
// contract). The request to `top` goes through `via` when given (a root
// user's edge to `top`, so it waits for drains; the walk then starts from
// wherever the edge points), else to the node directly.
Task<Result<ChainStatus>> co_block_status_above(Node& top, Node* base, uint64_t offset,
                                                uint64_t bytes, Child* via = nullptr);

struct Allocation {
  bool allocated = false;
  uint64_t bytes = 0;  // how far from offset the answer holds
};
// Whether some layer from `top` down to `base` allocates the range (base
// itself included when `include_base`), and for how long a prefix the
// answer holds (QEMU's bdrv_is_allocated_above).
Task<Result<Allocation>> co_is_allocated_above(Node& top, Node* base, bool include_base,
                                               uint64_t offset, uint64_t bytes);

}  // namespace strata
