// qcow2: metadata overlap checks before writes, as QEMU's default
// overlap-check=cached. A data write may not touch the header, the active
// or an inactive L1 table, the refcount table or blocks, the snapshot table,
// or an L2 table in the cache. A metadata write (L2 table, refcount block,
// L1 table or entry, refcount table or entry) may not touch any of them
// either, except the kind being written, and is checked against every L2
// table the active L1 names. A write that would is refused and the image is
// marked corrupt.
#include "block/drivers/qcow2/qcow2.h"

namespace strata::qcow2 {

namespace {
bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen) {
  return blen && alen && a < b + blen && b < a + alen;
}

unsigned ignore_for(Refcounts::WriteKind kind) {
  switch (kind) {
    case Refcounts::WriteKind::kRefcountBlock:
      return kMetaRefcountBlock;
    case Refcounts::WriteKind::kRefcountTable:
      return kMetaRefcountTable;
    case Refcounts::WriteKind::kNewRefcountTable:
      return 0;
  }
  return 0;
}
}  // namespace

const char* Qcow2Driver::overlapping_metadata(uint64_t offset, uint64_t bytes, unsigned ignore,
                                              bool all_l2) const {
  uint64_t cs = cluster_size();
  if (bytes == 0) return nullptr;
  if (!(ignore & kMetaHeader) && offset < cs) return "qcow2_header";
  // As QEMU: the range is widened to whole clusters.
  uint64_t start = offset / cs * cs;
  uint64_t len = round_up(offset + bytes, cs) - start;
  auto hits = [&](uint64_t b, uint64_t blen) { return overlaps(start, len, b, blen); };
  if (!(ignore & kMetaActiveL1) && hits(header_.l1_table_offset, uint64_t(header_.l1_size) * 8)) {
    return "active L1 table";
  }
  if (!(ignore & kMetaRefcountTable) &&
      hits(refcounts_->table_offset(), uint64_t(refcounts_->table_clusters()) * cs)) {
    return "refcount table";
  }
  if (!(ignore & kMetaSnapshotTable) && header_.nb_snapshots &&
      hits(header_.snapshots_offset, snapshot_table_bytes_)) {
    return "snapshot table";
  }
  if (!(ignore & kMetaInactiveL1)) {
    for (const auto& s : snapshots_) {
      if (hits(s.l1_table_offset, uint64_t(s.l1_size) * 8)) return "inactive L1 table";
    }
  }
  if (!(ignore & kMetaActiveL2)) {
    if (all_l2) {
      for (uint64_t e : l1_) {
        if ((e & kOffsetMask) && hits(e & kOffsetMask, cs)) return "active L2 table";
      }
    } else {
      for (uint64_t c = start; c < start + len; c += cs) {
        if (l2_cache_->contains(c)) return "active L2 table";
      }
    }
  }
  if (!(ignore & kMetaRefcountBlock) && refcounts_->overlaps_block(start, len)) {
    return "refcount block";
  }
  return nullptr;
}

Result<void> Qcow2Driver::check_overlap(uint64_t offset, uint64_t bytes) {
  if (!overlap_check_) return {};
  const char* what = overlapping_metadata(offset, bytes, 0, false);
  if (!what) return {};
  return signal_corruption(std::string("Preventing invalid write on metadata (overlaps with ") +
                           what + ")");
}

Result<void> Qcow2Driver::check_metadata_write(uint64_t offset, uint64_t bytes, unsigned ignore) {
  if (!overlap_check_) return {};
  const char* what = overlapping_metadata(offset, bytes, ignore, true);
  if (!what) return {};
  return signal_corruption(std::string("Preventing invalid write on metadata (overlaps with ") +
                           what + ")");
}

void Qcow2Driver::install_write_checks() {
  l2_cache_->set_write_check([this](uint64_t offset) {
    return check_metadata_write(offset, cluster_size(), kMetaActiveL2);
  });
  refcounts_->set_write_check([this](uint64_t offset, uint64_t bytes, Refcounts::WriteKind kind) {
    return check_metadata_write(offset, bytes, ignore_for(kind));
  });
}

}  // namespace strata::qcow2
