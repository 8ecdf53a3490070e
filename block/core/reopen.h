// Reopening a node read-only or read-write from the engine (QEMU's
// bdrv_reopen_set_read_only), for jobs that write to a backing node for a
// while (commit, stream) and give it back read-only after.
//
// Contract: `node` and the implicit children that inherit its flags
// (opened inline, used by nobody else) are drained with their parents,
// their drivers prepare for the new flag, the flags and permissions change
// as one graph change, then the drivers commit and finish (a qcow2 node
// marks its bitmaps in-use once writable). On any failure the drivers
// abort and nothing changes. Children a user added by name keep their own
// flags (a read-only one refuses a writer, as in QEMU).
// Thread rules: loop-thread only.
#pragma once

#include "block/core/graph.h"

namespace strata {

Task<Result<void>> co_set_read_only(Graph& graph, Node& node, bool read_only);

}  // namespace strata
