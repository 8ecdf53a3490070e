// qcow2: metadata overlap checks before writes, as QEMU's overlap-check.
// The option chooses the kinds of metadata a write may not touch: a mode
// ("none", "constant", "cached" (the default), "all") or an object with a
// `template` mode and one boolean per kind. A data write may touch none of
// the chosen kinds; a metadata write none but its own kind. Active L2 tables
// are those in the L2 cache for data writes and every table the active L1
// names for metadata writes; inactive L2 tables (only in "all") are those
// the snapshots' L1 tables name, kept in memory. A write that would overlap
// is refused and the image is marked corrupt.
#include <algorithm>
#include <array>

#include "block/core/options.h"
#include "block/drivers/qcow2/bitmap_format.h"
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

// QEMU's per-kind option names, in the order of the MetadataKind bits.
constexpr std::array<const char*, 9> kKindOptions = {
    "main-header",    "active-l1",   "active-l2",   "refcount-table",  "refcount-block",
    "snapshot-table", "inactive-l1", "inactive-l2", "bitmap-directory"};

Result<unsigned> mode_mask(const std::string& mode) {
  if (mode == "none") return 0u;
  if (mode == "constant") return unsigned(kOverlapConstant);
  if (mode == "cached") return unsigned(kOverlapCached);
  if (mode == "all") return unsigned(kOverlapAll);
  return Error{EINVAL, "Unsupported value '" + mode +
                           "' for qcow2 option 'overlap-check'. Allowed are any of the "
                           "following: none, constant, cached, all"};
}

Result<bool> kind_flag(const nlohmann::json& v, const std::string& name) {
  bool b = false;
  if (v.is_boolean()) return v.get<bool>();
  if (v.is_string() && parse_bool_word(v.get<std::string>(), &b)) return b;
  return Error{EINVAL, "Parameter 'overlap-check." + name + "' expects 'on' or 'off'"};
}

Result<unsigned> object_mask(const nlohmann::json& o) {
  unsigned mask = kOverlapCached;
  for (auto it = o.begin(); it != o.end(); ++it) {
    if (it.key() == "template") {
      if (!it.value().is_string()) {
        return Error{EINVAL, "Parameter 'overlap-check.template' expects a string"};
      }
      STRATA_TRY_ASSIGN(mask, mode_mask(it.value().get<std::string>()));
      continue;
    }
    if (std::find(kKindOptions.begin(), kKindOptions.end(), it.key()) == kKindOptions.end()) {
      return Error{EINVAL, "Block format 'qcow2' does not support the option 'overlap-check." +
                               it.key() + "'"};
    }
  }
  for (size_t i = 0; i < kKindOptions.size(); i++) {
    if (!o.contains(kKindOptions[i])) continue;
    bool on = false;
    STRATA_TRY_ASSIGN(on, kind_flag(o[kKindOptions[i]], kKindOptions[i]));
    mask = on ? (mask | (1u << i)) : (mask & ~(1u << i));
  }
  return mask;
}
}  // namespace

Result<unsigned> parse_overlap_checks(const nlohmann::json& options) {
  if (!options.contains("overlap-check")) return unsigned(kOverlapCached);
  const nlohmann::json& v = options["overlap-check"];
  if (v.is_string()) return mode_mask(v.get<std::string>());
  if (v.is_object()) return object_mask(v);
  return Error{EINVAL, "Parameter 'overlap-check' expects a mode or an object"};
}

const char* Qcow2Driver::overlapping_metadata(uint64_t offset, uint64_t bytes, unsigned ignore,
                                              bool all_l2) const {
  uint64_t cs = cluster_size();
  unsigned chk = overlap_checks_ & ~ignore;
  if (bytes == 0 || chk == 0) return nullptr;
  if ((chk & kMetaHeader) && offset < cs) return "qcow2_header";
  // As QEMU: the range is widened to whole clusters.
  uint64_t start = offset / cs * cs;
  uint64_t len = round_up(offset + bytes, cs) - start;
  auto hits = [&](uint64_t b, uint64_t blen) { return overlaps(start, len, b, blen); };
  if ((chk & kMetaActiveL1) && hits(header_.l1_table_offset, uint64_t(header_.l1_size) * 8)) {
    return "active L1 table";
  }
  if ((chk & kMetaRefcountTable) &&
      hits(refcounts_->table_offset(), uint64_t(refcounts_->table_clusters()) * cs)) {
    return "refcount table";
  }
  if ((chk & kMetaSnapshotTable) && header_.nb_snapshots &&
      hits(header_.snapshots_offset, snapshot_table_bytes_)) {
    return "snapshot table";
  }
  if (chk & kMetaInactiveL1) {
    for (const auto& s : snapshots_) {
      if (hits(s.l1_table_offset, uint64_t(s.l1_size) * 8)) return "inactive L1 table";
    }
  }
  if (chk & kMetaActiveL2) {
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
  if ((chk & kMetaRefcountBlock) && refcounts_->overlaps_block(start, len)) {
    return "refcount block";
  }
  if (chk & kMetaInactiveL2) {
    auto it = std::lower_bound(inactive_l2_.begin(), inactive_l2_.end(), start);
    if (it != inactive_l2_.end() && *it < start + len) return "inactive L2 table";
  }
  if ((chk & kMetaBitmapDirectory) && (header_.autoclear_features & kAutoclearBitmaps)) {
    if (const auto* e = header_.find_extension(kExtBitmaps)) {
      auto ext = parse_bitmaps_extension(e->data, cs);
      if (ext && hits(ext->directory_offset, ext->directory_size)) return "bitmap directory";
    }
  }
  return nullptr;
}

Result<void> Qcow2Driver::refuse_write_on(const char* what) {
  if (!what) return {};
  return signal_corruption(std::string("Preventing invalid write on metadata (overlaps with ") +
                           what + ")");
}

Result<void> Qcow2Driver::check_overlap(uint64_t offset, uint64_t bytes) {
  if (!overlap_checks_) return {};
  return refuse_write_on(overlapping_metadata(offset, bytes, 0, false));
}

Result<void> Qcow2Driver::check_metadata_write(uint64_t offset, uint64_t bytes, unsigned ignore) {
  if (!(overlap_checks_ & ~ignore)) return {};
  return refuse_write_on(overlapping_metadata(offset, bytes, ignore, true));
}

void Qcow2Driver::install_write_checks() {
  l2_cache_->set_write_check([this](uint64_t offset) {
    return check_metadata_write(offset, cluster_size(), kMetaActiveL2);
  });
  refcounts_->set_write_check([this](uint64_t offset, uint64_t bytes, Refcounts::WriteKind kind) {
    return check_metadata_write(offset, bytes, ignore_for(kind));
  });
}

// The L2 tables the snapshots' L1 tables name, sorted, for "inactive-l2"
// checks; read only when that kind is checked (QEMU reads them from disk on
// every check, which is why only "all" includes them). Offsets past the end
// of the file name no table and are left out, so the list holds at most one
// entry per cluster of the file whatever a hostile image says.
Task<Result<void>> Qcow2Driver::co_load_inactive_l2() {
  inactive_l2_.clear();
  if (!(overlap_checks_ & kMetaInactiveL2)) co_return Result<void>{};
  uint64_t file_end = file_->node()->size();
  for (const auto& s : snapshots_) {
    // QEMU's limit (QCOW_MAX_L1_SIZE, 32 MiB).
    if (uint64_t(s.l1_size) * 8 > (32u << 20))
      co_return Error{EFBIG, "Snapshot L1 table too large"};
    STRATA_CO_TRY_ASSIGN(auto l1, co_await co_read_l1_table(s.l1_table_offset, s.l1_size));
    for (uint64_t e : l1) {
      uint64_t l2 = e & kOffsetMask;
      if (l2 && l2 < file_end) inactive_l2_.push_back(l2);
    }
    std::sort(inactive_l2_.begin(), inactive_l2_.end());
    inactive_l2_.erase(std::unique(inactive_l2_.begin(), inactive_l2_.end()), inactive_l2_.end());
  }
  co_return Result<void>{};
}

}  // namespace strata::qcow2
