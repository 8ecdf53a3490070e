// qcow2: metadata overlap checks before writes, as QEMU's default
// overlap-check=cached: a write may not touch the header, the active or an
// inactive L1 table, the refcount table or blocks, the snapshot table, or an
// L2 table in the cache. A write that would is refused and the image is
// marked corrupt.
#include "block/drivers/qcow2/qcow2.h"

namespace strata::qcow2 {

namespace {
bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen) {
  return blen && alen && a < b + blen && b < a + alen;
}
}  // namespace

const char* Qcow2Driver::overlapping_metadata(uint64_t offset, uint64_t bytes) const {
  uint64_t cs = cluster_size();
  if (overlaps(offset, bytes, 0, cs)) return "qcow2_header";
  if (overlaps(offset, bytes, header_.l1_table_offset, uint64_t(header_.l1_size) * 8)) {
    return "active L1 table";
  }
  if (overlaps(offset, bytes, refcounts_->table_offset(),
               uint64_t(refcounts_->table_clusters()) * cs)) {
    return "refcount table";
  }
  if (header_.nb_snapshots &&
      overlaps(offset, bytes, header_.snapshots_offset, snapshot_table_bytes_)) {
    return "snapshot table";
  }
  for (const auto& s : snapshots_) {
    if (overlaps(offset, bytes, s.l1_table_offset, uint64_t(s.l1_size) * 8)) {
      return "inactive L1 table";
    }
  }
  if (refcounts_->overlaps_block(offset, bytes)) return "refcount block";
  for (uint64_t c = offset / cs * cs; c < offset + bytes; c += cs) {
    if (l2_cache_->contains(c)) return "active L2 table";
  }
  return nullptr;
}

Result<void> Qcow2Driver::check_overlap(uint64_t offset, uint64_t bytes) {
  if (!overlap_check_) return {};
  const char* what = overlapping_metadata(offset, bytes);
  if (!what) return {};
  return signal_corruption(std::string("Preventing invalid write on metadata (overlaps with ") +
                           what + ")");
}

}  // namespace strata::qcow2
