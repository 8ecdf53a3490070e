// The result of `qemu-img check` on the formats whose QEMU check only counts
// corruptions (vmdk, vdi): no leaks, no repair, no cluster statistics.
// Thread rules: plain value.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace strata {

struct FormatCheck {
  int64_t corruptions = 0;
  // Lines QEMU prints to stderr while it checks ("ERROR: ...").
  std::vector<std::string> messages;
  // The errno the check itself failed with (QEMU's "Check failed: ..."), or 0.
  int error = 0;
};

}  // namespace strata
