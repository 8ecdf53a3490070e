// Format probing for backing files named without a backing format: qcow2 by
// its magic, raw otherwise (as QEMU does for the formats Strata knows).
// Thread rules: loop-thread only.
#pragma once

#include <string>

#include "base/loop.h"
#include "strata/result.h"

namespace strata::qcow2 {

Task<Result<std::string>> co_probe_format(Loop& loop, std::string path);

}  // namespace strata::qcow2
