// QEMU's BDRV_BLOCK_RECURSE for format drivers whose data lies plainly in a
// file (flat vmdk extents, fixed VHDs, static VDIs): the data keeps its
// status and offset, and reads as zeroes where the file has a hole or ends.
// (Strata's kStatusRecurse is QEMU's BDRV_BLOCK_RAW: the file's status
// replaces the driver's, which would report holes as "no data".)
// Thread rules: loop-thread only.
#pragma once

#include "block/core/node.h"

namespace strata {

// `st` is data at st.map_offset of `file`; returns it with kStatusZero
// added (and its length cut to the file's extent) where the file reads as
// zeroes. Errors from the file leave `st` as it was, as in QEMU.
Task<Result<BlockStatus>> co_add_file_zero_status(Child* file, BlockStatus st);

}  // namespace strata
