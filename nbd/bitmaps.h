// Dirty bitmaps exported as qemu:dirty-bitmap:NAME contexts.
//
// Contract: resolve_dirty_bitmap() looks for the bitmap in the node, then
// down its filter and backing chain (as QEMU's NBD server), refuses one that
// is busy or inconsistent, and an enabled bitmap of a writable node on a
// read-only export (its content would change under the client), with
// QEMU's messages. The returned view keeps the bitmap busy until destroyed.
// Thread rules: loop-thread only.
#pragma once

#include <memory>
#include <string>

#include "nbd/extents.h"
#include "strata/result.h"

namespace strata {
class Node;
}

namespace strata::nbd {

Result<std::unique_ptr<BitmapView>> resolve_dirty_bitmap(Node& node, const std::string& name,
                                                         bool writable_export);

}  // namespace strata::nbd
