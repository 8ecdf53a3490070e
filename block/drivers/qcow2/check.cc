#include "block/drivers/qcow2/check.h"

#include <algorithm>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <map>

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

  Task<Result<void>> co_run();
  const std::vector<uint64_t>& refs() const { return refs_; }
  uint64_t highest() const { return highest_; }
  bool any() const { return any_; }

 private:
  void add(uint64_t offset, uint64_t bytes);
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
  bool any_ = false;
  uint64_t next_contiguous_ = 0;
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
    any_ = true;
  }
}

Task<Result<void>> ReferenceWalk::co_read(uint64_t offset, std::vector<uint8_t>& buf) {
  co_return co_await d_.file()->co_preadv(offset, IoVec(buf.data(), buf.size()), 0);
}

Task<Result<void>> ReferenceWalk::co_walk_l2(uint64_t l2_offset, bool active) {
  std::vector<uint8_t> table(cs_);
  STRATA_CO_TRY(co_await co_read(l2_offset, table));
  bool v3 = d_.header().version >= 3;
  for (uint64_t i = 0; i < cs_ / 8; i++) {
    uint64_t e = load_be64(&table[i * 8]);
    if (e & kCompressed) {
      if (e & kCopied) {
        res_.corruptions++;
        res_.messages.push_back(format("ERROR: coffset=0x%" PRIx64
                                       ": copied flag must never be set for compressed clusters",
                                       e & ~kCopied));
      }
      uint32_t shift = 62 - (bits_ - 8);
      uint64_t off = e & ((uint64_t(1) << shift) - 1);
      uint64_t sectors = ((e >> shift) & ((uint64_t(1) << (bits_ - 8)) - 1)) + 1;
      add(off & ~uint64_t(511), sectors * 512);
      if (active) {
        res_.allocated_clusters++;
        res_.compressed_clusters++;
      }
      continue;
    }
    uint64_t off = e & kOffsetMask;
    if (off == 0) continue;
    if (off % cs_) {
      res_.corruptions++;
      res_.messages.push_back(format(
          "ERROR offset=%" PRIx64 ": Cluster is not properly aligned; L2 entry corrupted.", off));
      continue;
    }
    (void)v3;
    add(off, cs_);
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

Task<Result<void>> ReferenceWalk::co_run() {
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
  add(rc.table_offset(), uint64_t(rc.table_clusters()) * cs_);
  for (uint64_t block : rc.table()) {
    if (block) add(block, cs_);
  }
  STRATA_CO_TRY(co_await co_walk_bitmaps());
  co_return Result<void>{};
}

// Compares references with refcounts; repairs when asked.
Task<Result<void>> co_compare(Qcow2Driver& d, const ReferenceWalk& walk, int fix,
                              CheckResult& res) {
  Refcounts& rc = d.refcounts();
  // As QEMU: clusters past the end of the file are not compared.
  uint64_t end = walk.refs().size();
  for (uint64_t c = 0; c < end; c++) {
    uint64_t bi = c / rc.block_entries();
    if (bi < rc.table().size() && rc.table()[bi] == 0 && c % rc.block_entries() == 0) {
      // A missing refcount block: its clusters must all be unreferenced.
      bool referenced = false;
      for (uint64_t k = c; k < std::min(end, c + rc.block_entries()) && k < walk.refs().size();
           k++) {
        referenced |= walk.refs()[k] != 0;
      }
      if (!referenced) {
        c += rc.block_entries() - 1;
        continue;
      }
    }
    uint64_t ref = c < walk.refs().size() ? walk.refs()[c] : 0;
    STRATA_CO_TRY_ASSIGN(uint64_t disk, co_await rc.co_get(c));
    if (disk || ref)
      res.image_end_offset = std::max(res.image_end_offset, (c + 1) << d.cluster_bits());
    if (disk == ref) continue;
    bool leak = disk > ref;
    res.messages.push_back(format("%s cluster %" PRIu64 " refcount=%" PRIu64 " reference=%" PRIu64,
                                  (leak ? ((fix & kFixLeaks) ? "Repairing" : "Leaked")
                                        : ((fix & kFixErrors) ? "Repairing" : "ERROR")),
                                  c, disk, ref));
    bool repair = leak ? (fix & kFixLeaks) : (fix & kFixErrors);
    if (repair) {
      auto r = co_await rc.co_update(c << d.cluster_bits(), 1, int64_t(ref) - int64_t(disk));
      if (r) {
        (leak ? res.leaks_fixed : res.corruptions_fixed)++;
        continue;
      }
      res.check_errors++;
    }
    (leak ? res.leaks : res.corruptions)++;
  }
  co_return Result<void>{};
}

// COPIED must be set exactly where the refcount is 1 (active tables only).
Task<Result<void>> co_check_copied(Qcow2Driver& d, int fix, CheckResult& res) {
  Refcounts& rc = d.refcounts();
  uint64_t cs = d.header().cluster_size();
  for (uint64_t i = 0; i < d.l1().size(); i++) {
    uint64_t l1e = d.l1()[i];
    uint64_t l2 = l1e & kOffsetMask;
    if (!l2 || l2 % cs) continue;
    STRATA_CO_TRY_ASSIGN(uint64_t refcount, co_await rc.co_get(l2 / cs));
    if (bool(l1e & kCopied) != (refcount == 1)) {
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
    for (uint64_t j = 0; j < cs / 8; j++) {
      uint64_t e = load_be64(table->bytes() + j * 8);
      uint64_t off = e & kOffsetMask;
      if ((e & kCompressed) || !off || off % cs) continue;
      STRATA_CO_TRY_ASSIGN(uint64_t drc, co_await rc.co_get(off / cs));
      if (bool(e & kCopied) == (drc == 1)) continue;
      res.messages.push_back(format("%s OFLAG_COPIED data cluster: l2_entry=%" PRIx64
                                    " refcount=%" PRIu64,
                                    (fix & kFixErrors) ? "Repairing" : "ERROR", e, drc));
      if (fix & kFixErrors) {
        store_be64(table->bytes() + j * 8, drc == 1 ? (e | kCopied) : (e & ~kCopied));
        d.l2_cache().mark_dirty(*table);
        res.corruptions_fixed++;
      } else {
        res.corruptions++;
      }
    }
  }
  co_return Result<void>{};
}

Task<Result<CheckResult>> co_check_once(Qcow2Driver& d, int fix) {
  CheckResult res;
  uint64_t cs = d.header().cluster_size();
  res.total_clusters = div_round_up(d.header().size, cs);
  ReferenceWalk walk(d, res);
  STRATA_CO_TRY(co_await walk.co_run());
  STRATA_CO_TRY(co_await co_compare(d, walk, fix, res));
  STRATA_CO_TRY(co_await co_check_copied(d, fix, res));
  if (walk.any()) res.image_end_offset = std::max(res.image_end_offset, (walk.highest() + 1) * cs);
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
