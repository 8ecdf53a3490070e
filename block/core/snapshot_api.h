// SnapshotApi: the point-in-time view a copy-before-write node keeps of the
// node below it (QEMU's bdrv_co_preadv_snapshot, bdrv_co_snapshot_block_status
// and bdrv_co_pdiscard_snapshot), reached through Driver::snapshot_api() by
// the snapshot-access driver instead of a cast to the filter's class.
//
// Contract: a read returns the data as it was when the view was taken:
// what was copied away comes from the copy, the rest from the live node,
// and guest writes to a range being read wait until the read is done. A
// read touching a range outside the view (never part of it, discarded from
// it, or every range once the view broke) fails with EACCES. Block status
// answers for the part of the view its range begins with (never
// "unallocated" for copied data), and EACCES where that begins outside. Discard
// drops the whole clusters it covers from the view and gives their space
// back; later reads of them fail with EACCES.
// Thread rules: loop-thread only.
#pragma once

#include <cstdint>

#include "block/core/types.h"
#include "strata/iovec.h"
#include "strata/result.h"
#include "strata/task.h"

namespace strata {

class SnapshotApi {
 public:
  virtual ~SnapshotApi() = default;
  virtual Task<Result<void>> co_snapshot_preadv(uint64_t offset, const IoVec& iov) = 0;
  virtual Task<Result<BlockStatus>> co_snapshot_block_status(uint64_t offset, uint64_t bytes) = 0;
  virtual Task<Result<void>> co_snapshot_pdiscard(uint64_t offset, uint64_t bytes) = 0;
};

}  // namespace strata
