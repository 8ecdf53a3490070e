// qemu-img check on a VMDK image, as QEMU's vmdk_co_check: walks the image
// a grain at a time and stops at the first grain that cannot be looked up
// or lies past the end of its file, which counts as one corruption and
// fails the check (the error then says why, as QEMU's "Check failed").
// Thread rules: loop-thread only; nothing else may use the node meanwhile.
#pragma once

#include "block/drivers/format_check.h"
#include "block/drivers/vmdk/vmdk.h"

namespace strata::vmdk {

Task<FormatCheck> co_check(VmdkDriver& driver);

}  // namespace strata::vmdk
