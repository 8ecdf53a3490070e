#include "block/drivers/vdi/check.h"

namespace strata::vdi {

FormatCheck check(const VdiDriver& driver) {
  FormatCheck out;
  const auto& bmap = driver.block_map();
  uint32_t blocks = driver.header().blocks_in_image;
  std::vector<bool> used(blocks, false);
  uint32_t allocated = 0;
  for (uint32_t block = 0; block < bmap.size(); block++) {
    uint32_t entry = bmap[block];
    if (!is_allocated(entry)) continue;
    if (entry >= blocks) {
      out.messages.push_back("ERROR: block index " + std::to_string(block) + " too large, is " +
                             std::to_string(entry));
      out.corruptions++;
      continue;
    }
    allocated++;
    if (used[entry]) {
      out.messages.push_back("ERROR: block index " + std::to_string(entry) + " also used by " +
                             std::to_string(entry));
      out.corruptions++;
    }
    used[entry] = true;
  }
  if (allocated != driver.header().blocks_allocated) {
    out.messages.push_back("ERROR: allocated blocks mismatch, is " + std::to_string(allocated) +
                           ", should be " + std::to_string(driver.header().blocks_allocated));
    out.corruptions++;
  }
  return out;
}

}  // namespace strata::vdi
