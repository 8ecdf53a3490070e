// Backing-chain lookups the block job commands share, with QEMU's rules
// (block.c: bdrv_chain_contains, bdrv_find_overlay, bdrv_find_base,
// bdrv_find_backing_image, bdrv_skip_filters; blockdev.c:
// qmp_get_root_bs).
// Thread rules: loop-thread only.
#pragma once

#include <string>

#include "block/core/graph.h"

namespace strata::qmp {

// The node itself, or the first node below its filters.
Node* skip_filters(Node* node);
// Whether `node` is `top` or in top's chain (backing edges and filters).
bool chain_contains(Node& top, const Node& node);
// The node in active's chain whose next layer (filters skipped) is `base`.
Node* find_overlay(Node& active, const Node& base);
// The bottom layer of the chain below `node` (null: it has none).
Node* find_base(Node& node);
// A layer below `node` named by file name, as QEMU matches it: the same
// string, or the same file once relative names are resolved against the
// directory of the layer above.
Node* find_backing_image(Node& node, const std::string& filename);
// A node that is the root of a device (no parent node): QEMU's
// qmp_get_root_bs, with DeviceNotFound when no node has that name.
Result<Node*> get_root_bs(const Graph& graph, const std::string& name);
// QEMU's `device` for block job commands: qmp_get_root_bs, with
// "Device '%s' not found" (DeviceNotFound) for an unknown name.
Result<Node*> get_job_device(const Graph& graph, const std::string& device);

}  // namespace strata::qmp
