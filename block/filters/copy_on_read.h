// copy-on-read: QEMU's filter that writes what a read fetches from the
// backing chain into the top layer, so that later reads find it there
// (qemu-io -C, block-stream, a slow remote backing file).
//
// Contract: the filter forwards every request to its `file` child; reads
// go down with kReqCopyOnRead, which the child's dispatcher turns into
// "read, then write back unchanged" for the ranges the child does not
// allocate, serialised against overlapping requests on the child
// (block/core/io.cc). With `bottom`, only data that comes from the layers
// above and including `bottom` is copied; reads of what lies below it are
// plain reads. The filter takes write-unchanged on its child in addition
// to what its parents pass through (QEMU's permissions), so it cannot sit
// on a read-only node. Splice reads are refused (ENOTSUP): they would
// bypass the copy. Options and messages are QEMU 7.2's.
//
// co_insert_copy_on_read / co_drop_copy_on_read are the engine API for code
// that puts the filter in a running graph (strata-io -C, block-stream):
// insertion moves every parent of the node to the filter in one graph change
// and is undone if permissions conflict; dropping moves them back and closes
// the filter.
// Thread rules: loop-thread only.
#pragma once

#include <string>

#include "block/core/graph.h"

namespace strata {

struct CopyOnReadOptions {
  std::string node_name;  // empty: an implicit name (#blockN)
  std::string bottom;     // node name; empty: copy from the whole chain
};

// Inserts a copy-on-read filter above `node`; returns the filter. Pass
// `options` as a named object: GCC 12 destroys a temporary coroutine
// argument of a class type twice.
Task<Result<Node*>> co_insert_copy_on_read(Graph& graph, Node& node, CopyOnReadOptions options);
// Removes a copy-on-read filter: its parents go back to its child, then it
// is closed, unless the monitor owns it (blockdev-add): blockdev-del does.
Task<Result<void>> co_drop_copy_on_read(Graph& graph, Node& filter);

}  // namespace strata
