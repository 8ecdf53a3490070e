#include "block/drivers/qcow2/check.h"

#include <algorithm>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <map>
#include "block/drivers/qcow2/check_l2.h"

namespace strata::qcow2 {

namespace {

constexpr uint64_t kMaxTrackedClusters = 1ull << 26;
// References this far past the end of the file are corruption, not
// clusters to count: memory for the counts stays bounded by the file size.
constexpr uint64_t kSlackClusters = 1ull << 20;

std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}

// One pass over the metadata: reference counts in memory.
class ReferenceWalk {
 public:
  ReferenceWalk(Qcow2Driver& d, CheckResult& res)
      : d_(d), res_(res), cs_(d.header().cluster_size()), bits_(d.cluster_bits()) {}

  // Counts every reference; sets `rebuild` when the refcount structure
  // itself is damaged (QEMU's calculate_refcounts + check_refblocks).
  Task<Result<void>> co_run(int fix, bool& rebuild);
  const std::vector<uint64_t>& refs() const { return refs_; }
  uint64_t highest() const { return highest_; }
  uint64_t file_clusters() const { return file_clusters_; }
  // The counts without the refcount table and blocks themselves.
  std::vector<uint64_t> refs_without_refcount_structure() const;

 private:
  void add(uint64_t offset, uint64_t bytes);
  void check_refblocks(int fix, bool& rebuild);
  Task<Result<void>> co_walk_l1(uint64_t l1_offset, uint32_t l1_size, bool active);
  Task<Result<void>> co_walk_l2(uint64_t l2_offset, bool active);
  Task<Result<void>> co_walk_bitmaps();
  Task<Result<void>> co_read(uint64_t offset, std::vector<uint8_t>& buf);

  Qcow2Driver& d_;
  CheckResult& res_;
  uint64_t cs_;
  uint32_t bits_;
  std::vector<uint64_t> refs_;
  uint64_t highest_ = 0;
  uint64_t next_contiguous_ = 0;
  std::vector<uint64_t> refcount_clusters_;  // clusters counted for the refcount structure
  uint64_t file_clusters_ = 0;
};

void ReferenceWalk::add(uint64_t offset, uint64_t bytes) {
  if (bytes == 0) return;
  uint64_t first = offset >> bits_;
  uint64_t last = (offset + bytes - 1) >> bits_;
  for (uint64_t c = first; c <= last; c++) {
    if (c >= std::min(kMaxTrackedClusters, file_clusters_ + kSlackClusters)) {
      res_.corruptions++;
      res_.messages.push_back(
          format("ERROR: cluster %" PRIu64 " is far beyond the end of the image", c));
      return;
    }
    if (c >= refs_.size()) {
      uint64_t cap = std::min(kMaxTrackedClusters, file_clusters_ + kSlackClusters);
      refs_.resize(std::min<uint64_t>(std::max<uint64_t>(c + 1, refs_.size() * 2), cap), 0);
    }
    refs_[c]++;
    highest_ = std::max(highest_, c);
  }
}

Task<Result<void>> ReferenceWalk::co_read(uint64_t offset, std::vector<uint8_t>& buf) {
  co_return co_await d_.file()->co_preadv(offset, IoVec(buf.data(), buf.size()), 0);
}

Task<Result<void>> ReferenceWalk::co_walk_l2(uint64_t l2_offset, bool active) {
  std::vector<uint8_t> table(cs_);
  STRATA_CO_TRY(co_await co_read(l2_offset, table));
  next_contiguous_ = 0;  // as QEMU: fragmentation is counted within one L2 table
  const L2Format& fmt = d_.l2_format();
  for (uint64_t i = 0; i < fmt.entries_per_table(); i++) {
    L2Entry le = fmt.load(table.data(), i);
    uint64_t e = le.entry;
    if ((e & kCompressed) && (e & kCopied)) {
      res_.corruptions++;
      res_.messages.push_back(format("ERROR: coffset=0x%" PRIx64
                                     ": copied flag must never be set for compressed clusters",
                                     e & ~kCopied));
    }
    EntryCheck entry_check = check_l2_entry(fmt, i, le);
    res_.corruptions += int64_t(entry_check.errors.size());
    for (auto& m : entry_check.errors) res_.messages.push_back(std::move(m));
    if (!entry_check.counted) continue;
    ClusterType type = fmt.cluster_type(e);
    if (type == ClusterType::kCompressed) {
      CompressedExtent c = fmt.compressed_extent(e);
      add(c.offset, c.bytes);
      if (active) {
        // As QEMU: compressed clusters count as fragmented.
        res_.allocated_clusters++;
        res_.compressed_clusters++;
        res_.fragmented_clusters++;
      }
      continue;
    }
    if (type != ClusterType::kNormal && type != ClusterType::kZeroAlloc) continue;
    uint64_t off = e & kOffsetMask;
    if (off % cs_) {
      res_.corruptions++;
      res_.messages.push_back(format(
          "ERROR offset=%" PRIx64 ": Cluster is not properly aligned; L2 entry corrupted.", off));
      continue;
    }
    if (!fmt.data_file) add(off, cs_);  // data file clusters have no refcounts
    if (active) {
      res_.allocated_clusters++;
      if (next_contiguous_ && off != next_contiguous_) res_.fragmented_clusters++;
      next_contiguous_ = off + cs_;
    }
  }
  co_return Result<void>{};
}

Task<Result<void>> ReferenceWalk::co_walk_l1(uint64_t l1_offset, uint32_t l1_size, bool active) {
  add(l1_offset, uint64_t(l1_size) * 8);
  std::vector<uint8_t> l1(uint64_t(l1_size) * 8);
  if (l1_size) STRATA_CO_TRY(co_await co_read(l1_offset, l1));
  for (uint32_t i = 0; i < l1_size; i++) {
    uint64_t off = load_be64(&l1[i * 8]) & kOffsetMask;
    if (off == 0) continue;
    if (off % cs_) {
      res_.corruptions++;
      res_.messages.push_back(format(
          "ERROR l2_offset=%" PRIx64 ": Table is not cluster aligned; L1 entry corrupted", off));
      continue;
    }
    add(off, cs_);
    STRATA_CO_TRY(co_await co_walk_l2(off, active));
  }
  co_return Result<void>{};
}

Task<Result<void>> ReferenceWalk::co_walk_bitmaps() {
  const HeaderExtension* ext = d_.header().find_extension(kExtBitmaps);
  if (!ext || ext->data.size() < 24) co_return Result<void>{};
  uint32_t count = load_be32(ext->data.data());
  uint64_t dir_size = load_be64(ext->data.data() + 8);
  uint64_t dir_offset = load_be64(ext->data.data() + 16);
  if (dir_size > 1024ull * 65535) co_return Error{EINVAL, "bitmap directory too large"};
  if (dir_offset + dir_size > d_.file()->node()->size()) {
    co_return Error{EINVAL, "bitmap directory past the end of the file"};
  }
  add(dir_offset, dir_size);
  std::vector<uint8_t> dir(dir_size);
  STRATA_CO_TRY(co_await co_read(dir_offset, dir));
  uint64_t pos = 0;
  for (uint32_t i = 0; i < count && pos + 24 <= dir.size(); i++) {
    uint64_t table_offset = load_be64(&dir[pos]);
    uint32_t table_size = load_be32(&dir[pos + 8]);
    uint16_t name_size = load_be16(&dir[pos + 18]);
    uint32_t extra = load_be32(&dir[pos + 20]);
    pos += round_up(24 + uint64_t(extra) + name_size, 8);
    if (table_size > 0x8000000 ||
        table_offset + uint64_t(table_size) * 8 > d_.file()->node()->size()) {
      res_.corruptions++;
      res_.messages.push_back("ERROR bitmap table past the end of the file");
      continue;
    }
    add(table_offset, uint64_t(table_size) * 8);
    std::vector<uint8_t> table(uint64_t(table_size) * 8);
    STRATA_CO_TRY(co_await co_read(table_offset, table));
    for (uint32_t j = 0; j < table_size; j++) {
      uint64_t off = load_be64(&table[j * 8]) & kOffsetMask;
      if (off) add(off, cs_);
    }
  }
  co_return Result<void>{};
}

void ReferenceWalk::check_refblocks(int fix, bool& rebuild) {
  Refcounts& rc = d_.refcounts();
  for (uint64_t bi = 0; bi < rc.table().size(); bi++) {
    uint64_t offset = rc.table()[bi];
    if (offset == 0) continue;
    if (rc.entry_damaged(bi)) {
      res_.messages.push_back(format("ERROR refcount block %" PRIu64
                                     " is not cluster aligned; refcount table entry corrupted",
                                     bi));
      res_.corruptions++;
      rebuild = true;
      continue;
    }
    uint64_t cluster = offset >> bits_;
    if (cluster >= file_clusters_) {
      // QEMU grows the file to cover the block; a rebuild replaces it instead.
      res_.messages.push_back(format("%s refcount block %" PRIu64 " is outside image",
                                     (fix & kFixErrors) ? "Repairing" : "ERROR", bi));
      res_.corruptions++;
      rebuild = true;
      continue;
    }
    add(offset, cs_);
    refcount_clusters_.push_back(cluster);
    if (refs_[cluster] != 1) {
      res_.messages.push_back(
          format("ERROR refcount block %" PRIu64 " refcount=%" PRIu64, bi, refs_[cluster]));
      res_.corruptions++;
      rebuild = true;
    }
  }
}

std::vector<uint64_t> ReferenceWalk::refs_without_refcount_structure() const {
  std::vector<uint64_t> counts = refs_;
  for (uint64_t c : refcount_clusters_) {
    if (c < counts.size() && counts[c]) counts[c]--;
  }
  return counts;
}

Task<Result<void>> ReferenceWalk::co_run(int fix, bool& rebuild) {
  const Header& h = d_.header();
  file_clusters_ = div_round_up(d_.file()->node()->size(), cs_);
  if (file_clusters_ > kMaxTrackedClusters) {
    co_return Error{EFBIG, "qcow2: image file has too many clusters to check"};
  }
  refs_.assign(file_clusters_, 0);
  add(0, cs_);
  STRATA_CO_TRY(co_await co_walk_l1(h.l1_table_offset, h.l1_size, true));
  for (const auto& s : d_.snapshots()) {
    if (s.l1_size > kMaxL1Bytes / 8) {
      res_.corruptions++;
      res_.messages.push_back("ERROR snapshot " + s.id + " (" + s.name + ") l1_size is too big");
      continue;
    }
    STRATA_CO_TRY(co_await co_walk_l1(s.l1_table_offset, s.l1_size, false));
  }
  if (h.nb_snapshots) {
    uint64_t bytes = serialize_snapshot_table(d_.snapshots()).size();
    add(h.snapshots_offset, bytes);
  }
  Refcounts& rc = d_.refcounts();
  uint64_t table_bytes = uint64_t(rc.table_clusters()) * cs_;
  add(rc.table_offset(), table_bytes);
  for (uint64_t c = rc.table_offset() >> bits_; c < (rc.table_offset() + table_bytes) >> bits_;
       c++) {
    refcount_clusters_.push_back(c);
  }
  STRATA_CO_TRY(co_await co_walk_bitmaps());
  check_refblocks(fix, rebuild);
  co_return Result<void>{};
}

// Compares references with refcounts; repairs when asked. A referenced
// cluster with refcount 0 cannot be repaired in place: it asks for a
// rebuild (QEMU's compare_refcounts).
Task<Result<void>> co_compare(Qcow2Driver& d, const ReferenceWalk& walk, int fix, CheckResult& res,
                              bool& rebuild, uint64_t& highest) {
  Refcounts& rc = d.refcounts();
  const std::vector<uint64_t>& refs = walk.refs();
  // As QEMU: the clusters of the file and those referenced past its end.
  uint64_t end = std::max<uint64_t>(walk.file_clusters(), walk.highest() + 1);
  end = std::min<uint64_t>(end, refs.size());
  highest = 0;
  for (uint64_t c = 0; c < end; c++) {
    uint64_t bi = c / rc.block_entries();
    if (c % rc.block_entries() == 0 && (bi >= rc.table().size() || rc.table()[bi] == 0)) {
      // A missing refcount block: skip it when none of its clusters is referenced.
      uint64_t block_end = std::min(end, c + rc.block_entries());
      if (std::all_of(refs.begin() + c, refs.begin() + block_end,
                      [](uint64_t r) { return r == 0; })) {
        c = block_end - 1;
        continue;
      }
    }
    auto disk_or = co_await rc.co_get(c);
    if (!disk_or) {
      res.messages.push_back(format("Can't get refcount for cluster %" PRIu64 ": %s", c,
                                    std::strerror(disk_or.error().code)));
      res.check_errors++;
      continue;
    }
    uint64_t disk = *disk_or;
    uint64_t ref = refs[c];
    if (disk || ref) highest = c;
    if (disk == ref) continue;
    int64_t* fixed = nullptr;
    if (disk == 0) {
      rebuild = true;
    } else if (disk > ref && (fix & kFixLeaks)) {
      fixed = &res.leaks_fixed;
    } else if (disk < ref && (fix & kFixErrors)) {
      fixed = &res.corruptions_fixed;
    }
    res.messages.push_back(format("%s cluster %" PRIu64 " refcount=%" PRIu64 " reference=%" PRIu64,
                                  fixed ? "Repairing" : (disk < ref ? "ERROR" : "Leaked"), c, disk,
                                  ref));
    if (fixed) {
      auto r = co_await rc.co_update(c << d.cluster_bits(), 1, int64_t(ref) - int64_t(disk));
      if (r) {
        (*fixed)++;
        continue;
      }
    }
    (disk < ref ? res.corruptions : res.leaks)++;
  }
  co_return Result<void>{};
}

// Replaces a damaged refcount structure by one computed from the
// references, written past everything in use (QEMU's
// rebuild_refcount_structure).
Task<Result<void>> co_rebuild(Qcow2Driver& d, const ReferenceWalk& walk) {
  // References past the end of the file point at data the file does not
  // have; placing the new structure past them could grow the file to a
  // hostile offset.
  if (walk.highest() >= walk.file_clusters()) {
    co_return Error{EIO, "clusters are referenced past the end of the file"};
  }
  uint64_t first_free = walk.file_clusters();
  STRATA_CO_TRY_ASSIGN(
      RefcountStructure fresh,
      co_await co_write_refcount_structure(d.file(), d.cluster_bits(), d.refcounts().order(),
                                           walk.refs_without_refcount_structure(), first_free));
  co_return co_await d.co_install_refcounts(fresh, d.refcounts().order());
}

// COPIED must be set exactly where the refcount is 1 (active tables only).
Task<Result<void>> co_check_copied(Qcow2Driver& d, int fix, CheckResult& res) {
  Refcounts& rc = d.refcounts();
  uint64_t cs = d.header().cluster_size();
  for (uint64_t i = 0; i < d.l1().size(); i++) {
    uint64_t l1e = d.l1()[i];
    uint64_t l2 = l1e & kOffsetMask;
    if (!l2 || l2 % cs) continue;
    // As QEMU: a refcount that cannot be read was reported by the comparison.
    auto refcount_or = co_await rc.co_get(l2 / cs);
    uint64_t refcount = refcount_or ? *refcount_or : 1;
    if (refcount_or && bool(l1e & kCopied) != (refcount == 1)) {
      res.messages.push_back(format("%s OFLAG_COPIED L2 cluster: l1_index=%" PRIu64
                                    " l1_entry=%" PRIx64 " refcount=%" PRIu64,
                                    (fix & kFixErrors) ? "Repairing" : "ERROR", i, l1e, refcount));
      if (fix & kFixErrors) {
        STRATA_CO_TRY(
            co_await d.co_set_l1_entry(i, refcount == 1 ? (l1e | kCopied) : (l1e & ~kCopied)));
        res.corruptions_fixed++;
      } else {
        res.corruptions++;
      }
    }
    STRATA_CO_TRY_ASSIGN(auto table, co_await d.l2_cache().co_get(l2));
    const L2Format& fmt = d.l2_format();
    for (uint64_t j = 0; j < fmt.entries_per_table(); j++) {
      uint64_t e = fmt.load(table->bytes(), j).entry;
      uint64_t off = e & kOffsetMask;
      ClusterType type = fmt.cluster_type(e);
      if ((type != ClusterType::kNormal && type != ClusterType::kZeroAlloc) || off % cs) continue;
      uint64_t drc = 1;  // data file clusters have no refcounts
      if (!fmt.data_file) {
        auto drc_or = co_await rc.co_get(off / cs);
        if (!drc_or) continue;
        drc = *drc_or;
      }
      if (bool(e & kCopied) == (drc == 1)) continue;
      res.messages.push_back(format("%s OFLAG_COPIED data cluster: l2_entry=%" PRIx64
                                    " refcount=%" PRIu64,
                                    (fix & kFixErrors) ? "Repairing" : "ERROR", e, drc));
      if (fix & kFixErrors) {
        store_be64(table->bytes() + j * fmt.entry_bytes(),
                   drc == 1 ? (e | kCopied) : (e & ~kCopied));
        d.l2_cache().mark_dirty(*table);
        res.corruptions_fixed++;
      } else {
        res.corruptions++;
      }
    }
  }
  co_return Result<void>{};
}

// After a rebuild: the references again, against the new structure, with
// the leaks the rebuild left repaired (QEMU's qcow2_check_refcounts).
Task<Result<void>> co_recount_after_rebuild(Qcow2Driver& d, int fix, CheckResult& res,
                                            uint64_t& highest) {
  CheckResult old = res;
  res.corruptions = 0;
  res.leaks = 0;
  ReferenceWalk walk(d, res);
  bool rebuild = false;
  STRATA_CO_TRY(co_await walk.co_run(0, rebuild));
  int64_t fresh_leaks = 0;
  if (fix & kFixLeaks) {
    CheckResult scratch;
    STRATA_CO_TRY(co_await co_compare(d, walk, kFixLeaks, scratch, rebuild, highest));
    res.messages.insert(res.messages.end(), scratch.messages.begin(), scratch.messages.end());
    if (rebuild) res.messages.push_back("ERROR rebuilt refcount structure is still broken");
    fresh_leaks = scratch.leaks;
  }
  if (res.corruptions < old.corruptions) res.corruptions_fixed += old.corruptions - res.corruptions;
  if (res.leaks < old.leaks) res.leaks_fixed += old.leaks - res.leaks;
  res.leaks += fresh_leaks;
  co_return Result<void>{};
}

Task<Result<CheckResult>> co_check_once(Qcow2Driver& d, int fix) {
  CheckResult res;
  uint64_t cs = d.header().cluster_size();
  res.total_clusters = div_round_up(d.header().size, cs);
  ReferenceWalk walk(d, res);
  bool rebuild = false;
  STRATA_CO_TRY(co_await walk.co_run(fix, rebuild));
  CheckResult before_compare = res;
  uint64_t highest = 0;
  STRATA_CO_TRY(co_await co_compare(d, walk, 0, res, rebuild, highest));
  if (rebuild && (fix & kFixErrors)) {
    res.messages.push_back("Rebuilding refcount structure");
    if (auto r = co_await co_rebuild(d, walk); !r) {
      res.messages.push_back("ERROR rebuilding refcount structure: " + r.error().message);
      res.check_errors++;
      co_return res;
    }
    STRATA_CO_TRY(co_await co_recount_after_rebuild(d, fix, res, highest));
  } else if (fix) {
    if (rebuild) {
      res.messages.push_back("ERROR need to rebuild refcount structures");
      res.check_errors++;
      co_return res;
    }
    if (res.leaks || res.corruptions) {
      std::vector<std::string> messages = std::move(res.messages);
      res = before_compare;
      res.messages = std::move(messages);
      STRATA_CO_TRY(co_await co_compare(d, walk, fix, res, rebuild, highest));
    }
  }
  STRATA_CO_TRY(co_await co_check_copied(d, fix, res));
  res.image_end_offset = (highest + 1) * cs;
  if (fix) STRATA_CO_TRY(co_await d.co_flush_all_metadata());
  co_return res;
}

}  // namespace

Task<Result<CheckResult>> co_check(Qcow2Driver& d, int fix) {
  co_await d.metadata_lock().co_lock();
  CoMutex::Guard guard(&d.metadata_lock());
  if (!d.node().read_only()) STRATA_CO_TRY(co_await d.co_flush_all_metadata());
  STRATA_CO_TRY_ASSIGN(CheckResult first, co_await co_check_once(d, fix));
  if (!fix || (first.leaks_fixed == 0 && first.corruptions_fixed == 0)) co_return first;
  STRATA_CO_TRY_ASSIGN(CheckResult again, co_await co_check_once(d, 0));
  again.leaks_fixed = first.leaks_fixed;
  again.corruptions_fixed = first.corruptions_fixed;
  again.messages.insert(again.messages.begin(), first.messages.begin(), first.messages.end());
  co_return again;
}

}  // namespace strata::qcow2
