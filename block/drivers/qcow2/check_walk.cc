#include "block/drivers/qcow2/check_walk.h"

#include <algorithm>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstring>

namespace strata::qcow2 {

namespace {

// The counts are 8 bytes a cluster: files with more clusters are refused
// (QEMU refuses more than INT_MAX).
constexpr uint64_t kMaxTrackedClusters = 1ull << 26;
// Reads at or past this offset fail as QEMU's requests do.
constexpr uint64_t kMaxOffset = uint64_t(INT64_MAX) & ~uint64_t(511);

}  // namespace

std::string check_format(const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}

bool ReferenceWalk::add(uint64_t offset, uint64_t bytes) {
  if (bytes == 0) return true;
  // As QEMU: the last cluster may be partly past the end of the file, but a
  // region reaching a whole cluster past it is not there at all.
  if (offset > UINT64_MAX - bytes || offset + bytes >= file_size_ + cs_) {
    message(
        check_format("ERROR: counting reference for region exceeding the end of the file by "
                     "one cluster or more: offset 0x%" PRIx64 " size 0x%" PRIx64,
                     offset, bytes));
    res_.corruptions++;
    return false;
  }
  uint64_t max = d_.refcounts().max_refcount();
  for (uint64_t c = offset >> bits_; c <= (offset + bytes - 1) >> bits_; c++) {
    if (c >= refs_.size()) refs_.resize(c + 1, 0);
    if (refs_[c] == max) {
      message(check_format("ERROR: overflow cluster offset=0x%" PRIx64, c << bits_));
      message(
          "Use qemu-img amend to increase the refcount entry width or qemu-img convert to create "
          "a clean copy if the image cannot be opened for writing");
      res_.corruptions++;
      continue;
    }
    refs_[c]++;
  }
  return true;
}

Task<Result<void>> ReferenceWalk::co_read(uint64_t offset, std::vector<uint8_t>& buf,
                                          const char* what) {
  Result<void> r;
  if (offset >= kMaxOffset || buf.size() > kMaxOffset - offset) {
    r = Error{EIO, "offset out of range"};
  } else {
    // Past the end of the file reads zeroes, as in QEMU.
    r = co_await d_.file()->co_preadv(offset, IoVec(buf.data(), buf.size()), 0);
  }
  if (!r) {
    message(std::string("ERROR: I/O error in ") + what);
    res_.check_errors++;
  }
  co_return r;
}

void ReferenceWalk::report(const EntryCheck& check) {
  for (const auto& m : check.errors) message(m);
  res_.corruptions += int64_t(check.errors.size());
}

uint64_t ReferenceWalk::check_compressed_copied(uint64_t e) {
  if (!(e & kCopied)) return e;
  uint64_t offset_mask = (uint64_t(1) << (62 - (bits_ - 8))) - 1;
  message(check_format("ERROR: coffset=0x%" PRIx64
                       ": copied flag must never be set for compressed clusters",
                       e & offset_mask));
  res_.corruptions++;
  return e & ~kCopied;
}

void ReferenceWalk::count_compressed(uint64_t e, bool active) {
  uint32_t shift = 62 - (bits_ - 8);
  uint64_t coffset = e & ((uint64_t(1) << shift) - 1);
  uint64_t sectors = ((e >> shift) & ((uint64_t(1) << (bits_ - 8)) - 1)) + 1;
  add(coffset, sectors * 512 - (coffset & 511));
  if (active) {
    res_.allocated_clusters++;
    res_.compressed_clusters++;
    // As QEMU: compressed clusters count as fragmented (they are read by
    // whole sectors, never contiguously with their neighbours).
    res_.fragmented_clusters++;
  }
}

void ReferenceWalk::count_data(uint64_t offset, bool active) {
  if (active) {
    res_.allocated_clusters++;
    if (next_contiguous_ && offset != next_contiguous_) res_.fragmented_clusters++;
    next_contiguous_ = offset + cs_;
  }
  if (!d_.l2_format().data_file) add(offset, cs_);  // data file clusters have no refcounts
}

// QEMU's fix_l2_entry_by_zero: the entry becomes a plain zero cluster.
// Error: the write would hit other metadata (the check stops there);
// false: it failed otherwise (the entry is counted as it is).
Task<Result<bool>> ReferenceWalk::co_fix_entry_by_zero(uint64_t l2_offset, uint64_t i,
                                                       bool active) {
  const L2Format& fmt = d_.l2_format();
  uint64_t at = l2_offset + i * fmt.entry_bytes();
  if (auto r =
          d_.check_metadata_write(at, fmt.entry_bytes(), active ? kMetaActiveL2 : kMetaInactiveL2);
      !r) {
    message("ERROR: Overlap check failed");
    res_.check_errors++;
    co_return std::move(r).error();
  }
  // With subclusters, a zero cluster is an all-zero bitmap (QEMU's
  // QCOW_L2_BITMAP_ALL_ZEROES).
  uint8_t entry[16] = {};
  L2Entry zero{fmt.extended ? 0 : kZeroFlag, fmt.extended ? kBitmapAllZeroes : 0};
  fmt.store(entry, 0, zero);
  auto r = co_await d_.file()->co_pwrite(at, {entry, fmt.entry_bytes()});
  if (r) r = co_await d_.file()->co_flush();
  if (!r) {
    message(std::string("ERROR: Failed to overwrite L2 table entry: ") +
            std::strerror(r.error().code));
    res_.check_errors++;
    co_return false;
  }
  d_.l2_cache().discard(l2_offset);
  res_.corruptions--;
  res_.corruptions_fixed++;
  co_return true;
}

Task<Result<bool>> ReferenceWalk::co_unaligned_entry(uint64_t l2_offset, uint64_t i, uint64_t e,
                                                     bool active) {
  uint64_t offset = e & kOffsetMask;
  res_.corruptions++;
  if (!(e & kZeroFlag)) {
    message(check_format("ERROR offset=%" PRIx64
                         ": Data cluster is not properly aligned; L2 entry corrupted.",
                         offset));
    co_return false;
  }
  bool repair = fix_ & kFixErrors;
  message(check_format("%s offset=%" PRIx64
                       ": Preallocated cluster is not properly aligned; L2 entry corrupted.",
                       repair ? "Repairing" : "ERROR", offset));
  if (!repair) co_return false;
  co_return co_await co_fix_entry_by_zero(l2_offset, i, active);
}

Task<Result<void>> ReferenceWalk::co_walk_l2(uint64_t l2_offset, bool active) {
  std::vector<uint8_t> table(cs_);
  STRATA_CO_TRY(co_await co_read(l2_offset, table, "check_refcounts_l2"));
  next_contiguous_ = 0;  // as QEMU: fragmentation is counted within one L2 table
  const L2Format& fmt = d_.l2_format();
  for (uint64_t i = 0; i < fmt.entries_per_table(); i++) {
    L2Entry le = fmt.load(table.data(), i);
    ClusterType type = fmt.cluster_type(le.entry);
    EntryCheck entry_check = check_l2_entry(fmt, i, le);
    if (type == ClusterType::kCompressed) {
      uint64_t e = check_compressed_copied(le.entry);
      report(entry_check);
      if (entry_check.counted) count_compressed(e, active);
      continue;
    }
    report(entry_check);
    if (type != ClusterType::kNormal && type != ClusterType::kZeroAlloc) continue;
    uint64_t e = le.entry;
    if ((e & kOffsetMask) % cs_) {
      STRATA_CO_TRY_ASSIGN(bool fixed, co_await co_unaligned_entry(l2_offset, i, e, active));
      if (fixed) continue;  // a plain zero cluster now: nothing to count
    }
    count_data(e & kOffsetMask, active);
  }
  co_return Result<void>{};
}

Task<Result<void>> ReferenceWalk::co_walk_l1(uint64_t l1_offset, uint32_t l1_size, bool active) {
  if (l1_size == 0) co_return Result<void>{};
  add(l1_offset, uint64_t(l1_size) * 8);
  std::vector<uint8_t> l1(uint64_t(l1_size) * 8);
  STRATA_CO_TRY(co_await co_read(l1_offset, l1, "check_refcounts_l1"));
  for (uint32_t i = 0; i < l1_size; i++) {
    uint64_t e = load_be64(&l1[uint64_t(i) * 8]);
    if (e == 0) continue;
    if (e & kL1ReservedMask) {
      message(check_format("ERROR found L1 entry with reserved bits set: %" PRIx64, e));
      res_.corruptions++;
    }
    uint64_t l2 = e & kOffsetMask;
    add(l2, cs_);
    if (l2 % cs_) {
      message(check_format(
          "ERROR l2_offset=%" PRIx64 ": Table is not cluster aligned; L1 entry corrupted", l2));
      res_.corruptions++;
    }
    STRATA_CO_TRY(co_await co_walk_l2(l2, active));
  }
  co_return Result<void>{};
}

Task<Result<void>> ReferenceWalk::co_walk_snapshots() {
  for (const auto& s : d_.snapshots()) {
    if (s.l1_table_offset % cs_) {
      message(check_format("ERROR snapshot %s (%s) l1_offset=%#" PRIx64
                           ": L1 table is not cluster aligned; snapshot table entry corrupted",
                           s.id.c_str(), s.name.c_str(), s.l1_table_offset));
      res_.corruptions++;
      continue;
    }
    if (s.l1_size > kMaxL1Bytes / 8) {
      message(check_format("ERROR snapshot %s (%s) l1_size=%#" PRIx32
                           ": L1 table is too large; snapshot table entry corrupted",
                           s.id.c_str(), s.name.c_str(), s.l1_size));
      res_.corruptions++;
      continue;
    }
    STRATA_CO_TRY(co_await co_walk_l1(s.l1_table_offset, s.l1_size, false));
  }
  add(d_.header().snapshots_offset, d_.snapshot_table_bytes());
  co_return Result<void>{};
}

Task<Result<void>> ReferenceWalk::co_walk_bitmaps() {
  const HeaderExtension* ext = d_.header().find_extension(kExtBitmaps);
  if (!ext || ext->data.size() < 24) co_return Result<void>{};
  uint32_t count = load_be32(ext->data.data());
  uint64_t dir_size = load_be64(ext->data.data() + 8);
  uint64_t dir_offset = load_be64(ext->data.data() + 16);
  if (dir_size > 1024ull * 65535) co_return Error{EINVAL, "bitmap directory too large"};
  if (!add(dir_offset, dir_size)) co_return Error{EINVAL, "bitmap directory past the end of file"};
  std::vector<uint8_t> dir(dir_size);
  STRATA_CO_TRY(co_await co_read(dir_offset, dir, "the bitmap directory"));
  uint64_t pos = 0;
  for (uint32_t i = 0; i < count && pos + 24 <= dir.size(); i++) {
    uint64_t table_offset = load_be64(&dir[pos]);
    uint32_t table_size = load_be32(&dir[pos + 8]);
    uint16_t name_size = load_be16(&dir[pos + 18]);
    uint32_t extra = load_be32(&dir[pos + 20]);
    pos += round_up(24 + uint64_t(extra) + name_size, 8);
    if (table_size > 0x8000000 || !add(table_offset, uint64_t(table_size) * 8)) {
      res_.corruptions++;
      message("ERROR bitmap table past the end of the file");
      continue;
    }
    std::vector<uint8_t> table(uint64_t(table_size) * 8);
    STRATA_CO_TRY(co_await co_read(table_offset, table, "a bitmap table"));
    for (uint32_t j = 0; j < table_size; j++) {
      uint64_t off = load_be64(&table[j * 8]) & kOffsetMask;
      if (off) add(off, cs_);
    }
  }
  co_return Result<void>{};
}

void ReferenceWalk::check_refblock(uint64_t bi, bool& rebuild) {
  uint64_t e = d_.refcounts().table()[bi];
  uint64_t offset = e & kRefTableOffsetMask;
  uint64_t cluster = offset >> bits_;
  if (e & ~kRefTableOffsetMask) {
    message(check_format("ERROR refcount table entry %" PRIu64 " has reserved bits set", bi));
  } else if (offset % cs_) {
    message(check_format("ERROR refcount block %" PRIu64
                         " is not cluster aligned; refcount table entry corrupted",
                         bi));
  } else if (cluster >= refs_.size()) {
    // QEMU grows the file to cover the block; a rebuild replaces it instead.
    message(check_format("%s refcount block %" PRIu64 " is outside image",
                         (fix_ & kFixErrors) ? "Repairing" : "ERROR", bi));
  } else {
    if (offset == 0) return;
    add(offset, cs_);
    refcount_clusters_.push_back(cluster);
    if (refs_[cluster] == 1) return;
    message(check_format("ERROR refcount block %" PRIu64 " refcount=%" PRIu64, bi, refs_[cluster]));
  }
  res_.corruptions++;
  rebuild = true;
}

void ReferenceWalk::check_refblocks(bool& rebuild) {
  for (uint64_t bi = 0; bi < d_.refcounts().table().size(); bi++) check_refblock(bi, rebuild);
}

std::vector<uint64_t> ReferenceWalk::refs_without_refcount_structure() const {
  std::vector<uint64_t> counts = refs_;
  for (uint64_t c : refcount_clusters_) {
    if (c < counts.size() && counts[c]) counts[c]--;
  }
  return counts;
}

Task<Result<void>> ReferenceWalk::co_run(bool& rebuild) {
  const Header& h = d_.header();
  file_size_ = d_.file()->node()->size();
  uint64_t clusters = div_round_up(file_size_, cs_);
  if (clusters > kMaxTrackedClusters) {
    res_.check_errors++;
    co_return Error{EFBIG, "qcow2: image file has too many clusters to check"};
  }
  refs_.assign(clusters, 0);
  add(0, cs_);
  STRATA_CO_TRY(co_await co_walk_l1(h.l1_table_offset, h.l1_size, true));
  STRATA_CO_TRY(co_await co_walk_snapshots());
  Refcounts& rc = d_.refcounts();
  uint64_t table_bytes = uint64_t(rc.table_clusters()) * cs_;
  if (add(rc.table_offset(), table_bytes)) {
    for (uint64_t c = rc.table_offset() >> bits_; c < (rc.table_offset() + table_bytes) >> bits_;
         c++) {
      refcount_clusters_.push_back(c);
    }
  }
  STRATA_CO_TRY(co_await co_walk_bitmaps());
  check_refblocks(rebuild);
  co_return Result<void>{};
}

}  // namespace strata::qcow2
