#include "block/drivers/vmdk/check.h"

namespace strata::vmdk {

namespace {

FormatCheck failed(FormatCheck c, int error, std::string message) {
  c.messages.push_back(std::move(message));
  c.corruptions++;
  c.error = error;
  return c;
}

}  // namespace

Task<FormatCheck> co_check(VmdkDriver& driver) {
  FormatCheck c;
  uint64_t total = driver.size() / kSector;
  for (uint64_t sector = 0; sector < total;) {
    Extent* e = driver.find_extent(sector * kSector);
    if (!e) {
      co_return failed(c, EINVAL,
                       "ERROR: could not find extent for sector " + std::to_string(sector));
    }
    auto g = co_await e->co_lookup(sector * kSector - e->start_byte());
    if (!g) {
      // QEMU returns VMDK_ERROR (-1) here, which it reports as EPERM.
      co_return failed(c, EPERM,
                       "ERROR: could not get cluster_offset for sector " + std::to_string(sector));
    }
    bool has_data = g->kind == GrainKind::kData || g->kind == GrainKind::kCompressed;
    if (has_data && !e->check_in_file(*g)) {
      co_return failed(
          c, EINVAL,
          "ERROR: cluster offset for sector " + std::to_string(sector) + " points after EOF");
    }
    // Unallocated grain tables are skipped whole; QEMU steps a grain at a
    // time through them, to the same result.
    sector += std::min(g->bytes_left / kSector, e->end_sector() - sector);
  }
  co_return c;
}

}  // namespace strata::vmdk
