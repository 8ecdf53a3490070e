// qemu-img check on a VDI image, as QEMU's vdi_co_check: every block map
// entry that is allocated must be below the block count and used once, and
// their number must be the header's count of allocated blocks.
// Thread rules: loop-thread only.
#pragma once

#include "block/drivers/format_check.h"
#include "block/drivers/vdi/vdi.h"

namespace strata::vdi {

FormatCheck check(const VdiDriver& driver);

}  // namespace strata::vdi
