// qcow2: creating, applying and deleting internal snapshots. Refcounts of
// every table and data cluster a snapshot shares are raised before the
// snapshot table names it and lowered only after nothing names it any more,
// and COPIED flags of the active tables are recomputed afterwards.
#include <algorithm>
#include <chrono>
#include <cstring>

#include "block/drivers/qcow2/qcow2.h"

namespace strata::qcow2 {

int Qcow2Driver::find_snapshot(const std::string& key) const {
  for (size_t i = 0; i < snapshots_.size(); i++) {
    if (snapshots_[i].id == key) return int(i);
  }
  for (size_t i = 0; i < snapshots_.size(); i++) {
    if (snapshots_[i].name == key) return int(i);
  }
  return -1;
}

Task<Result<std::vector<uint64_t>>> Qcow2Driver::co_read_l1_table(uint64_t offset, uint32_t size) {
  std::vector<uint64_t> l1(size);
  if (size == 0) co_return l1;
  AlignedBuffer buf(uint64_t(size) * 8);
  STRATA_CO_TRY(co_await file_->co_preadv(offset, buf.iov(), 0));
  for (uint32_t i = 0; i < size; i++) l1[i] = load_be64(buf.data() + i * 8);
  co_return l1;
}

Task<Result<void>> Qcow2Driver::co_update_tree_refcounts(std::vector<uint64_t> l1, int64_t delta) {
  // Clusters a decrement frees are discarded in the file afterwards, as
  // QEMU does for snapshot operations (pass-discard-snapshot).
  bool discard = delta < 0;
  uint64_t cs = cluster_size();
  for (uint64_t l1e : l1) {
    uint64_t l2 = l1e & kOffsetMask;
    if (!l2) continue;
    if (l2 % cs) co_return signal_corruption("L2 table offset unaligned");
    STRATA_CO_TRY_ASSIGN(auto table, co_await l2_cache_->co_get(l2));
    std::vector<uint64_t> entries(l2fmt_.entries_per_table());
    for (uint64_t j = 0; j < entries.size(); j++) entries[j] = l2fmt_.load(table->bytes(), j).entry;
    table.reset();
    for (uint64_t e : entries) {
      if (e & kCompressed) {
        CompressedExtent c = l2fmt_.compressed_extent(e);
        uint64_t start = c.offset / cs;
        uint64_t end = div_round_up(c.offset + c.bytes, cs);
        STRATA_CO_TRY(co_await refcounts_->co_update(start * cs, end - start, delta, discard));
      } else if (e & kOffsetMask) {
        STRATA_CO_TRY(co_await refcounts_->co_update(e & kOffsetMask, 1, delta, discard));
      }
    }
    STRATA_CO_TRY(co_await refcounts_->co_update(l2, 1, delta, discard));
  }
  co_return Result<void>{};
}

Task<Result<void>> Qcow2Driver::co_write_whole_l1() {
  STRATA_CO_TRY(check_metadata_write(header_.l1_table_offset, l1_.size() * 8, kMetaActiveL1));
  AlignedBuffer buf(std::max<uint64_t>(l1_.size() * 8, 8));
  for (size_t i = 0; i < l1_.size(); i++) store_be64(buf.data() + i * 8, l1_[i]);
  STRATA_CO_TRY(
      co_await file_->co_pwritev(header_.l1_table_offset, IoVec(buf.data(), l1_.size() * 8), 0));
  co_return co_await file_->co_flush();
}

// COPIED is set exactly where the refcount is 1, in the active tables.
Task<Result<void>> Qcow2Driver::co_rebuild_copied() {
  uint64_t cs = cluster_size();
  for (auto& l1e : l1_) {
    uint64_t l2 = l1e & kOffsetMask;
    if (!l2) continue;
    STRATA_CO_TRY_ASSIGN(uint64_t rc, co_await refcounts_->co_get(l2 / cs));
    l1e = rc == 1 ? (l1e | kCopied) : (l1e & ~kCopied);
    STRATA_CO_TRY_ASSIGN(auto table, co_await l2_cache_->co_get(l2));
    for (uint64_t j = 0; j < l2fmt_.entries_per_table(); j++) {
      uint8_t* slot = table->bytes() + j * l2fmt_.entry_bytes();
      uint64_t e = load_be64(slot);
      if ((e & kCompressed) || !(e & kOffsetMask)) continue;
      STRATA_CO_TRY_ASSIGN(uint64_t drc, co_await refcounts_->co_get((e & kOffsetMask) / cs));
      uint64_t fixed = drc == 1 ? (e | kCopied) : (e & ~kCopied);
      if (fixed != e) {
        store_be64(slot, fixed);
        l2_cache_->mark_dirty(*table);
      }
    }
  }
  STRATA_CO_TRY(co_await co_flush_metadata());
  co_return co_await co_write_whole_l1();
}

Task<Result<void>> Qcow2Driver::co_write_snapshot_table(std::vector<Snapshot> snaps) {
  std::vector<uint8_t> bytes = serialize_snapshot_table(snaps);
  uint64_t cs = cluster_size();
  uint64_t offset = 0;
  if (!bytes.empty()) {
    uint64_t clusters = div_round_up(bytes.size(), cs);
    STRATA_CO_TRY_ASSIGN(offset, co_await refcounts_->co_alloc(clusters));
    STRATA_CO_TRY(co_await co_l2_barrier());
    STRATA_CO_TRY(check_metadata_write(offset, bytes.size()));
    STRATA_CO_TRY(co_await file_->co_pwrite(offset, bytes));
    STRATA_CO_TRY(co_await file_->co_flush());
  }
  uint8_t hdr[12];
  store_be32(hdr, uint32_t(snaps.size()));
  store_be64(hdr + 4, offset);
  STRATA_CO_TRY(co_await file_->co_pwrite(60, {hdr, 12}));
  STRATA_CO_TRY(co_await file_->co_flush());
  uint64_t old_offset = header_.snapshots_offset;
  uint64_t old_bytes = snapshot_table_bytes_;  // as it is in the file
  header_.nb_snapshots = uint32_t(snaps.size());
  header_.snapshots_offset = offset;
  snapshots_ = std::move(snaps);
  snapshot_table_bytes_ = bytes.size();
  if (old_offset && old_bytes) {
    STRATA_CO_TRY(
        co_await refcounts_->co_update(old_offset, div_round_up(old_bytes, cs), -1, true));
  }
  co_return co_await co_load_inactive_l2();
}

std::vector<SnapshotEntry> Qcow2Driver::list_snapshots() const {
  std::vector<SnapshotEntry> out;
  for (const Snapshot& s : snapshots_) {
    out.push_back(SnapshotEntry{.id = s.id,
                                .name = s.name,
                                .vm_state_size = s.vm_state_size,
                                .date_sec = s.date_sec,
                                .date_nsec = s.date_nsec,
                                .vm_clock_nsec = s.vm_clock_nsec,
                                .has_icount = s.has_icount && s.icount >= 0,
                                .icount = s.icount});
  }
  return out;
}

Task<Result<void>> Qcow2Driver::co_snapshot_create(std::string name, int64_t icount) {
  if (!writable_) co_return Error{EROFS, "Image is read-only"};
  // As QEMU: the data file has no refcounts to share clusters with.
  if (external_data()) co_return Error{ENOTSUP, "Operation not supported"};
  co_await lock_->co_lock();
  CoMutex::Guard guard(lock_.get());
  // Names may repeat, as in QEMU: IDs are what identify snapshots.
  if (snapshots_.size() >= 65536) co_return Error{EFBIG, "Too many snapshots"};
  STRATA_CO_TRY(co_await co_flush_metadata());
  Snapshot s;
  uint64_t max_id = 0;
  for (const auto& o : snapshots_)
    max_id = std::max<uint64_t>(max_id, std::strtoull(o.id.c_str(), nullptr, 10));
  s.id = std::to_string(max_id + 1);
  s.name = name;
  auto now = std::chrono::system_clock::now().time_since_epoch();
  s.date_sec = uint32_t(std::chrono::duration_cast<std::chrono::seconds>(now).count());
  s.date_nsec =
      uint32_t(std::chrono::duration_cast<std::chrono::nanoseconds>(now).count() % 1000000000);
  s.disk_size = header_.size;
  s.has_disk_size = true;
  s.icount = icount;
  s.has_icount = true;
  s.l1_size = uint32_t(l1_.size());
  // The snapshot's own copy of the L1.
  uint64_t l1_bytes = std::max<uint64_t>(l1_.size() * 8, 8);
  STRATA_CO_TRY_ASSIGN(s.l1_table_offset,
                       co_await refcounts_->co_alloc(div_round_up(l1_bytes, cluster_size())));
  AlignedBuffer buf(l1_bytes);
  std::memset(buf.data(), 0, l1_bytes);
  for (size_t i = 0; i < l1_.size(); i++) store_be64(buf.data() + i * 8, l1_[i]);
  STRATA_CO_TRY(check_metadata_write(s.l1_table_offset, l1_.size() * 8));
  STRATA_CO_TRY(co_await file_->co_pwritev(s.l1_table_offset, buf.iov(), 0));
  STRATA_CO_TRY(co_await co_update_tree_refcounts(l1_, +1));
  STRATA_CO_TRY(co_await co_rebuild_copied());
  auto snaps = snapshots_;
  snaps.push_back(s);
  STRATA_CO_TRY(co_await co_write_snapshot_table(std::move(snaps)));
  STRATA_CO_TRY(co_await co_flush_metadata());
  co_await co_discard_freed();
  co_return Result<void>{};
}

Task<Result<void>> Qcow2Driver::co_snapshot_apply(std::string key) {
  if (!writable_) co_return Error{EROFS, "Image is read-only"};
  if (external_data()) co_return Error{ENOTSUP, "Operation not supported"};
  co_await lock_->co_lock();
  CoMutex::Guard guard(lock_.get());
  int idx = find_snapshot(key);
  if (idx < 0) co_return Error{ENOENT, "Can't find snapshot"};
  const Snapshot s = snapshots_[idx];
  if (s.has_disk_size && s.disk_size != header_.size) {
    co_return Error{ENOTSUP, "qcow2: Loading snapshots with different disk size is not supported"};
  }
  STRATA_CO_TRY(co_await co_flush_metadata());
  STRATA_CO_TRY_ASSIGN(auto snap_l1, co_await co_read_l1_table(s.l1_table_offset, s.l1_size));
  if (snap_l1.size() > l1_.size()) STRATA_CO_TRY(co_await co_grow_l1(snap_l1.size()));
  STRATA_CO_TRY(co_await co_update_tree_refcounts(snap_l1, +1));
  STRATA_CO_TRY(co_await co_l2_barrier());
  std::vector<uint64_t> old = l1_;
  std::fill(l1_.begin(), l1_.end(), 0);
  std::copy(snap_l1.begin(), snap_l1.end(), l1_.begin());
  STRATA_CO_TRY(co_await co_write_whole_l1());
  STRATA_CO_TRY(co_await co_update_tree_refcounts(old, -1));
  STRATA_CO_TRY(co_await co_rebuild_copied());
  co_await co_discard_freed();
  co_return Result<void>{};
}

Task<Result<void>> Qcow2Driver::co_snapshot_delete(std::string key) {
  if (!writable_) co_return Error{EROFS, "Image is read-only"};
  co_await lock_->co_lock();
  CoMutex::Guard guard(lock_.get());
  int idx = find_snapshot(key);
  if (idx < 0) co_return Error{ENOENT, "Can't find the snapshot"};
  const Snapshot s = snapshots_[idx];
  STRATA_CO_TRY(co_await co_flush_metadata());
  auto snaps = snapshots_;
  snaps.erase(snaps.begin() + idx);
  STRATA_CO_TRY(co_await co_write_snapshot_table(std::move(snaps)));
  STRATA_CO_TRY_ASSIGN(auto snap_l1, co_await co_read_l1_table(s.l1_table_offset, s.l1_size));
  STRATA_CO_TRY(co_await co_update_tree_refcounts(snap_l1, -1));
  uint64_t l1_clusters =
      div_round_up(std::max<uint64_t>(uint64_t(s.l1_size) * 8, 8), cluster_size());
  STRATA_CO_TRY(co_await refcounts_->co_update(s.l1_table_offset, l1_clusters, -1, true));
  STRATA_CO_TRY(co_await co_rebuild_copied());
  co_await co_discard_freed();
  co_return Result<void>{};
}

// QEMU's qcow2_snapshot_load_tmp: the snapshot's L1 replaces the active
// one in memory; the image keeps its size (what lies past the snapshot's
// L1 reads as unallocated).
Task<Result<void>> Qcow2Driver::co_snapshot_load_tmp(std::string id, std::string name) {
  if (writable_) co_return Error{EINVAL, "Device is not readonly"};
  co_await lock_->co_lock();
  CoMutex::Guard guard(lock_.get());
  int idx = -1;
  for (size_t i = 0; i < snapshots_.size() && idx < 0; i++) {
    if ((id.empty() || snapshots_[i].id == id) && (name.empty() || snapshots_[i].name == name)) {
      idx = int(i);
    }
  }
  if (idx < 0) co_return Error{ENOENT, "Can't find snapshot"};
  const Snapshot& s = snapshots_[idx];
  uint64_t bytes = uint64_t(s.l1_size) * 8;
  if (bytes > kMaxL1Bytes) co_return Error{EFBIG, "Snapshot L1 table too large"};
  if (s.l1_table_offset % cluster_size() || s.l1_table_offset + bytes > file_->node()->size()) {
    co_return Error{EINVAL, "Snapshot L1 table offset invalid"};
  }
  STRATA_CO_TRY_ASSIGN(auto snap_l1, co_await co_read_l1_table(s.l1_table_offset, s.l1_size));
  l1_ = std::move(snap_l1);
  co_return Result<void>{};
}

}  // namespace strata::qcow2
