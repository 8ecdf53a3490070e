// Loading a qcow2 node's persistent dirty bitmaps into its BitmapSet (QEMU's
// qcow2_load_dirty_bitmaps), read-only nodes only for now.
//
// Contract: without a bitmaps extension, or with the autoclear bit 0 clear
// (a bitmap-unaware program wrote the image), nothing is loaded. Otherwise
// every directory entry becomes a persistent, read-only bitmap of the node,
// enabled when its `auto` flag is set; an entry found in-use loads as an
// inconsistent bitmap without data. A corrupt extension, directory or
// table fails the whole load with QEMU's message and loads nothing. A
// writable node is refused (ENOTSUP) until the store side (in-use marking
// at open, crash-safe store at close) exists, because a bitmap loaded there
// would not be kept consistent on disk.
// Thread rules: loop-thread only.
#pragma once

#include "block/core/node.h"
#include "strata/result.h"
#include "strata/task.h"

namespace strata::qcow2 {

Task<Result<void>> co_load_qcow2_bitmaps(Node& node);

}  // namespace strata::qcow2
