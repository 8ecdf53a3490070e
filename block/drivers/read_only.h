// Format drivers that only read (vmdk, vpc, vdi): a node of theirs must be
// read-only. Call before opening any child, so the children inherit it.
// Thread rules: loop-thread only.
#pragma once

#include <string>

#include "block/core/node.h"
#include "strata/result.h"

namespace strata {

// A read-only node passes; a read-write node with auto-read-only becomes
// read-only (as QEMU's bdrv_apply_auto_read_only); any other read-write node
// fails with "Strata cannot write FORMAT images (read-only driver)" (EROFS).
Result<void> require_read_only(Node& node, const std::string& format);

}  // namespace strata
