// qcow2 check and repair, in QEMU's order (qcow2_co_check_locked): the
// snapshot table is read (and cut down where it cannot be kept), the
// references are counted (check_walk.cc) and compared with the refcounts,
// which are repaired or rebuilt, the COPIED flags are checked, then a
// snapshot table with repaired entries is written anew.
#include "block/drivers/qcow2/check.h"

#include <algorithm>
#include <cinttypes>
#include <cstring>

#include "block/drivers/qcow2/check_walk.h"

namespace strata::qcow2 {

namespace {

// Whether refcount block `bi` is missing (no entry in the table).
bool block_missing(Refcounts& rc, uint64_t bi) {
  return bi >= rc.table().size() || rc.table()[bi] == 0;
}

// One cluster whose refcount differs from its references: reported, and
// repaired when `fix` allows (QEMU's compare_refcounts).
Task<void> co_compare_one(Qcow2Driver& d, uint64_t c, uint64_t disk, uint64_t ref, int fix,
                          CheckResult& res, bool& rebuild) {
  int64_t* fixed = nullptr;
  if (disk == 0) {
    rebuild = true;
  } else if (disk > ref && (fix & kFixLeaks)) {
    fixed = &res.leaks_fixed;
  } else if (disk < ref && (fix & kFixErrors)) {
    fixed = &res.corruptions_fixed;
  }
  res.messages.push_back(
      check_format("%s cluster %" PRIu64 " refcount=%" PRIu64 " reference=%" PRIu64,
                   fixed ? "Repairing" : (disk < ref ? "ERROR" : "Leaked"), c, disk, ref));
  if (fixed) {
    auto r =
        co_await d.refcounts().co_update(c << d.cluster_bits(), 1, int64_t(ref) - int64_t(disk));
    if (r) {
      (*fixed)++;
      co_return;
    }
  }
  (disk < ref ? res.corruptions : res.leaks)++;
}

// Compares references with refcounts over the clusters the walk covered;
// a referenced cluster with refcount 0 cannot be repaired in place: it asks
// for a rebuild.
Task<void> co_compare(Qcow2Driver& d, const std::vector<uint64_t>& refs, int fix, CheckResult& res,
                      bool& rebuild, uint64_t& highest) {
  Refcounts& rc = d.refcounts();
  uint64_t end = refs.size();
  highest = 0;
  for (uint64_t c = 0; c < end; c++) {
    uint64_t bi = c / rc.block_entries();
    if (c % rc.block_entries() == 0 && block_missing(rc, bi)) {
      // A missing refcount block: skip it when none of its clusters is referenced.
      uint64_t block_end = std::min(end, c + rc.block_entries());
      if (std::all_of(refs.begin() + c, refs.begin() + block_end,
                      [](uint64_t r) { return r == 0; })) {
        c = block_end - 1;
        continue;
      }
    }
    auto disk = co_await rc.co_get(c);
    if (!disk) {
      res.messages.push_back(check_format("Can't get refcount for cluster %" PRIu64 ": %s", c,
                                          std::strerror(disk.error().code)));
      res.check_errors++;
      continue;
    }
    if (*disk || refs[c]) highest = c;
    if (*disk != refs[c]) co_await co_compare_one(d, c, *disk, refs[c], fix, res, rebuild);
  }
}

// Replaces a damaged refcount structure by one computed from the
// references, written past everything the file holds (QEMU's
// rebuild_refcount_structure reuses free clusters instead).
Task<Result<void>> co_rebuild(Qcow2Driver& d, const ReferenceWalk& walk) {
  std::vector<uint64_t> counts = walk.refs_without_refcount_structure();
  uint64_t first_free = walk.refs().size();
  STRATA_CO_TRY_ASSIGN(
      RefcountStructure fresh,
      co_await co_write_refcount_structure(d.file(), d.cluster_bits(), d.refcounts().order(),
                                           std::move(counts), first_free));
  co_return co_await d.co_install_refcounts(fresh, d.refcounts().order());
}

// After a rebuild: the references again, against the new structure, with
// the leaks the rebuild left repaired.
Task<Result<void>> co_recount_after_rebuild(Qcow2Driver& d, int fix, CheckResult& res,
                                            uint64_t& highest) {
  CheckResult old = res;
  res.corruptions = 0;
  res.leaks = 0;
  ReferenceWalk walk(d, res, 0);
  bool rebuild = false;
  STRATA_CO_TRY(co_await walk.co_run(rebuild));
  int64_t fresh_leaks = 0;
  if (fix & kFixLeaks) {
    CheckResult scratch;
    co_await co_compare(d, walk.refs(), kFixLeaks, scratch, rebuild, highest);
    res.messages.insert(res.messages.end(), scratch.messages.begin(), scratch.messages.end());
    if (rebuild) res.messages.push_back("ERROR rebuilt refcount structure is still broken");
    fresh_leaks = scratch.leaks;
  }
  if (res.corruptions < old.corruptions) res.corruptions_fixed += old.corruptions - res.corruptions;
  if (res.leaks < old.leaks) res.leaks_fixed += old.leaks - res.leaks;
  res.leaks += fresh_leaks;
  co_return Result<void>{};
}

// The COPIED flag of one active L1 entry: set exactly when the L2 table's
// refcount is 1.
Task<Result<void>> co_check_l1_copied(Qcow2Driver& d, uint64_t i, bool repair, CheckResult& res) {
  uint64_t l1e = d.l1()[i];
  uint64_t l2 = l1e & kOffsetMask;
  // As QEMU: a refcount that cannot be read was reported by the comparison.
  auto refcount = co_await d.refcounts().co_get(l2 >> d.cluster_bits());
  if (!refcount || (*refcount == 1) == bool(l1e & kCopied)) co_return Result<void>{};
  res.corruptions++;
  res.messages.push_back(check_format("%s OFLAG_COPIED L2 cluster: l1_index=%" PRIu64
                                      " l1_entry=%" PRIx64 " refcount=%" PRIu64,
                                      repair ? "Repairing" : "ERROR", i, l1e, *refcount));
  if (!repair) co_return Result<void>{};
  auto r = co_await d.co_set_l1_entry(i, *refcount == 1 ? (l1e | kCopied) : (l1e & ~kCopied));
  if (!r) {
    res.check_errors++;
    co_return r;
  }
  res.corruptions--;
  res.corruptions_fixed++;
  co_return Result<void>{};
}

// The COPIED flags of the entries of one active L2 table, read from and
// written back to the file as QEMU does.
Task<Result<void>> co_check_l2_copied(Qcow2Driver& d, uint64_t l2, bool repair, CheckResult& res) {
  uint64_t cs = d.header().cluster_size();
  std::vector<uint8_t> table(cs);
  auto r = co_await d.file()->co_preadv(l2, IoVec(table.data(), cs), 0);
  if (!r) {
    res.messages.push_back(std::string("ERROR: Could not read L2 table: ") +
                           std::strerror(r.error().code));
    res.check_errors++;
    co_return r;
  }
  int64_t dirty = 0;
  const L2Format& fmt = d.l2_format();
  for (uint64_t j = 0; j < fmt.entries_per_table(); j++) {
    uint64_t e = fmt.load(table.data(), j).entry;
    ClusterType type = fmt.cluster_type(e);
    if (type != ClusterType::kNormal && type != ClusterType::kZeroAlloc) continue;
    // Clusters of an external data file have no refcounts: 1, as QEMU.
    Result<uint64_t> refcount = uint64_t{1};
    if (!fmt.data_file)
      refcount = co_await d.refcounts().co_get((e & kOffsetMask) >> d.cluster_bits());
    if (!refcount || (*refcount == 1) == bool(e & kCopied)) continue;
    res.corruptions++;
    res.messages.push_back(check_format("%s OFLAG_COPIED data cluster: l2_entry=%" PRIx64
                                        " refcount=%" PRIu64,
                                        repair ? "Repairing" : "ERROR", e, *refcount));
    if (!repair) continue;
    store_be64(&table[j * fmt.entry_bytes()], *refcount == 1 ? (e | kCopied) : (e & ~kCopied));
    dirty++;
  }
  if (dirty == 0) co_return Result<void>{};
  r = d.check_metadata_write(l2, cs, kMetaActiveL2);
  const char* what = "ERROR: Could not write L2 table; metadata overlap check failed: ";
  if (r) {
    what = "ERROR: Could not write L2 table: ";
    r = co_await d.file()->co_pwrite(l2, {table.data(), cs});
  }
  if (!r) {
    res.messages.push_back(what + std::string(std::strerror(r.error().code)));
    res.check_errors++;
    co_return r;
  }
  d.l2_cache().discard(l2);
  res.corruptions -= dirty;
  res.corruptions_fixed += dirty;
  co_return Result<void>{};
}

// QEMU's check_oflag_copied. -r leaks repairs the flags only when the
// refcounts are known to be right by now.
Task<Result<void>> co_check_copied(Qcow2Driver& d, int fix, CheckResult& res) {
  bool repair = (fix & kFixErrors) ||
                ((fix & kFixLeaks) && !res.check_errors && !res.corruptions && !res.leaks);
  for (uint64_t i = 0; i < d.l1().size(); i++) {
    uint64_t l2 = d.l1()[i] & kOffsetMask;
    if (!l2) continue;
    STRATA_CO_TRY(co_await co_check_l1_copied(d, i, repair, res));
    STRATA_CO_TRY(co_await co_check_l2_copied(d, l2, repair, res));
  }
  co_return Result<void>{};
}

// QEMU's qcow2_check_refcounts.
Task<Result<void>> co_check_refcounts(Qcow2Driver& d, int fix, CheckResult& res) {
  res.total_clusters = div_round_up(d.header().size, d.header().cluster_size());
  ReferenceWalk walk(d, res, fix);
  bool rebuild = false;
  STRATA_CO_TRY(co_await walk.co_run(rebuild));
  CheckResult before_compare = res;
  uint64_t highest = 0;
  co_await co_compare(d, walk.refs(), 0, res, rebuild, highest);
  if (rebuild && (fix & kFixErrors)) {
    res.messages.push_back("Rebuilding refcount structure");
    if (auto r = co_await co_rebuild(d, walk); !r) {
      res.messages.push_back({"ERROR rebuilding refcount structure: " + r.error().message, true});
      res.check_errors++;
      co_return std::move(r).error();
    }
    STRATA_CO_TRY(co_await co_recount_after_rebuild(d, fix, res, highest));
  } else if (fix) {
    if (rebuild) {
      res.messages.push_back("ERROR need to rebuild refcount structures");
      res.check_errors++;
      co_return Error{EIO, "need to rebuild refcount structures"};
    }
    if (res.leaks || res.corruptions) {
      std::vector<CheckMessage> messages = std::move(res.messages);
      res = before_compare;
      res.messages = std::move(messages);
      co_await co_compare(d, walk.refs(), fix, res, rebuild, highest);
    }
  }
  STRATA_CO_TRY(co_await co_check_copied(d, fix, res));
  res.image_end_offset = (highest + 1) * d.header().cluster_size();
  co_return Result<void>{};
}

// Adds the counts of `from` to `to` (QEMU's qcow2_add_check_result).
void add_result(CheckResult& to, CheckResult& from, bool allocation_info) {
  to.corruptions += from.corruptions;
  to.leaks += from.leaks;
  to.check_errors += from.check_errors;
  to.corruptions_fixed += from.corruptions_fixed;
  to.leaks_fixed += from.leaks_fixed;
  to.messages.insert(to.messages.end(), std::make_move_iterator(from.messages.begin()),
                     std::make_move_iterator(from.messages.end()));
  from.messages.clear();
  if (allocation_info) {
    to.image_end_offset = from.image_end_offset;
    to.total_clusters = from.total_clusters;
    to.allocated_clusters = from.allocated_clusters;
    to.fragmented_clusters = from.fragmented_clusters;
    to.compressed_clusters = from.compressed_clusters;
  }
}

// One pass (QEMU's qcow2_co_check_locked). A failure that stops the check
// is recorded in `aborted`, with what was found until then.
Task<CheckResult> co_check_once(Qcow2Driver& d, int fix) {
  CheckResult res, snapshots, refcounts;
  auto r = co_await d.co_check_snapshot_table(fix, snapshots);
  // Messages in the order qemu-img prints them.
  res.messages = std::move(snapshots.messages);
  snapshots.messages.clear();
  if (r) {
    r = co_await co_check_refcounts(d, fix, refcounts);
    add_result(res, refcounts, true);
    if (r) r = co_await d.co_fix_snapshot_table(fix, snapshots);
  }
  add_result(res, snapshots, false);
  if (!r) {
    res.aborted = r.error().code;
    co_return res;
  }
  if (fix && res.check_errors == 0 && res.corruptions == 0) {
    if (auto m = co_await d.co_mark_repaired(); !m) res.aborted = m.error().code;
  }
  co_return res;
}

}  // namespace

Task<Result<CheckResult>> co_check(Qcow2Driver& d, int fix) {
  co_await d.metadata_lock().co_lock();
  CoMutex::Guard guard(&d.metadata_lock());
  if (!d.node().read_only()) STRATA_CO_TRY(co_await d.co_flush_all_metadata());
  // L2 tables are read from the file and entries repaired in it, as QEMU
  // does: nothing cached may shadow them.
  d.l2_cache().clear();
  CheckResult first = co_await co_check_once(d, fix);
  if (fix) {
    auto r = co_await d.co_flush_all_metadata();
    if (!r && !first.aborted) first.aborted = r.error().code;
  }
  // As qemu-img: after a repair, the image is checked again, and that
  // result is the one reported, with what was repaired.
  if (first.aborted || (first.leaks_fixed == 0 && first.corruptions_fixed == 0)) co_return first;
  CheckResult again = co_await co_check_once(d, 0);
  again.leaks_fixed = first.leaks_fixed;
  again.corruptions_fixed = first.corruptions_fixed;
  again.messages.insert(again.messages.begin(), first.messages.begin(), first.messages.end());
  co_return again;
}

}  // namespace strata::qcow2
