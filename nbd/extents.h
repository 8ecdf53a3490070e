// Block status as NBD reports it: the status of a range through the whole
// backing chain of an export's node, and merged extent lists for the meta
// contexts base:allocation, qemu:allocation-depth and qemu:dirty-bitmap.
//
// Contract: the chain walk is block/core's co_block_status_above from the
// exported node (asked through the export's root edge). Extent lists cover
// [offset, offset + length) or a prefix of it, never more; adjacent extents
// with equal values are merged; at most `max_extents` are returned.
// Thread rules: loop-thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "block/core/block_status.h"
#include "strata/result.h"
#include "strata/task.h"

namespace strata::nbd {

// The status of a range of the export's node through its whole chain
// (block/core/block_status.h), asked through the export's root edge.
Task<Result<ChainStatus>> co_chain_status(Child* root, uint64_t offset, uint64_t bytes);

struct Extent {
  uint64_t length = 0;
  uint32_t flags = 0;
};

// base:allocation flags (NBD_STATE_HOLE / NBD_STATE_ZERO) of a chain status.
uint32_t allocation_flags(const ChainStatus& st);

enum class ExtentKind { kAllocation, kDepth };
Task<Result<std::vector<Extent>>> co_status_extents(Child* root, ExtentKind kind, uint64_t offset,
                                                    uint64_t length, size_t max_extents);

// A dirty bitmap as an export sees it: runs of equal dirtiness.
class BitmapView {
 public:
  virtual ~BitmapView() = default;
  virtual const std::string& name() const = 0;
  // Whether `offset` is dirty and how many bytes from it (at most `max`)
  // share that state.
  virtual std::pair<bool, uint64_t> run(uint64_t offset, uint64_t max) const = 0;
};

std::vector<Extent> bitmap_extents(const BitmapView& bitmap, uint64_t offset, uint64_t length,
                                   size_t max_extents);

// Appends (length, value) to `out`, merging with the last extent when the
// values are equal; returns false (appending nothing) when that would need
// more than `max_extents` extents.
bool append_extent(std::vector<Extent>& out, uint64_t length, uint32_t value, size_t max_extents);

}  // namespace strata::nbd
