// qcow2: the L1/L2 mapping, L2 allocation, zero clusters, discard, block
// status and resize.
#include <sys/stat.h>

#include <algorithm>
#include <cstring>

#include "block/drivers/qcow2/bitmap_store.h"
#include "block/drivers/qcow2/qcow2.h"

namespace strata::qcow2 {

Result<uint64_t> Qcow2Driver::checked_host_offset(uint64_t entry) {
  uint64_t off = entry & kOffsetMask;
  if (off % cluster_size()) {
    char hex[32];
    snprintf(hex, sizeof hex, "%llx", static_cast<unsigned long long>(off));
    return signal_corruption(std::string("Cluster allocation offset 0x") + hex + " unaligned");
  }
  return off;
}

Result<uint64_t> Qcow2Driver::checked_host_cluster(uint64_t entry, uint64_t guest_cluster) {
  STRATA_TRY_ASSIGN(uint64_t off, checked_host_offset(entry));
  uint64_t guest = guest_cluster << cluster_bits_;
  if (external_data() && off != guest) {
    char msg[160];
    snprintf(msg, sizeof msg,
             "External data file host cluster offset %#llx does not match guest cluster offset: "
             "%#llx",
             static_cast<unsigned long long>(off), static_cast<unsigned long long>(guest));
    return signal_corruption(msg);
  }
  return off;
}

Error Qcow2Driver::invalid_entry(uint64_t l1_idx, uint64_t l2_idx) {
  char msg[128];
  snprintf(msg, sizeof msg, "Invalid cluster entry found  (L2 offset: %#llx, L2 index: %#llx)",
           static_cast<unsigned long long>(l1_[l1_idx] & kOffsetMask),
           static_cast<unsigned long long>(l2_idx));
  return signal_corruption(msg);
}

Task<Result<std::shared_ptr<Table>>> Qcow2Driver::co_l2_table(uint64_t l1_idx) {
  uint64_t off = l1_[l1_idx] & kOffsetMask;
  if (off == 0) co_return std::shared_ptr<Table>();
  if (off < cluster_size())
    co_return signal_corruption("L2 table at offset 0 (overlaps the header)");
  co_return co_await l2_cache_->co_get(off);
}

Task<Result<void>> Qcow2Driver::co_write_l1_entry(uint64_t l1_idx) {
  uint8_t b[8];
  store_be64(b, l1_[l1_idx]);
  STRATA_CO_TRY(check_metadata_write(header_.l1_table_offset + l1_idx * 8, 8, kMetaActiveL1));
  STRATA_CO_TRY(co_await file_->co_pwrite(header_.l1_table_offset + l1_idx * 8, {b, 8}));
  co_return co_await file_->co_flush();
}

Task<Result<void>> Qcow2Driver::co_set_l1_entry(uint64_t index, uint64_t entry) {
  if (index >= l1_.size()) co_return Error{EINVAL, "L1 index out of range"};
  l1_[index] = entry;
  co_return co_await co_write_l1_entry(index);
}

Task<Result<void>> Qcow2Driver::co_grow_l1(uint64_t min_size) {
  if (min_size <= l1_.size()) co_return Result<void>{};
  if (min_size * 8 > kMaxL1Bytes) co_return Error{EFBIG, "qcow2: L1 table too large"};
  uint64_t bytes = round_up(min_size * 8, cluster_size());
  STRATA_CO_TRY_ASSIGN(uint64_t where, co_await refcounts_->co_alloc(bytes / cluster_size()));
  AlignedBuffer buf(bytes);
  std::memset(buf.data(), 0, bytes);
  for (size_t i = 0; i < l1_.size(); i++) store_be64(buf.data() + i * 8, l1_[i]);
  STRATA_CO_TRY(co_await co_l2_barrier());
  STRATA_CO_TRY(check_metadata_write(where, bytes, 0));
  STRATA_CO_TRY(co_await file_->co_pwritev(where, buf.iov(), 0));
  STRATA_CO_TRY(co_await file_->co_flush());
  uint8_t hdr[12];
  store_be32(hdr, uint32_t(min_size));
  store_be64(hdr + 4, where);
  STRATA_CO_TRY(co_await file_->co_pwrite(36, {hdr, 12}));
  STRATA_CO_TRY(co_await file_->co_flush());
  uint64_t old = header_.l1_table_offset;
  uint64_t old_clusters = div_round_up(uint64_t(header_.l1_size) * 8, cluster_size());
  header_.l1_size = uint32_t(min_size);
  header_.l1_table_offset = where;
  l1_.resize(min_size, 0);
  if (old) refcounts_->free_later(old, old_clusters);
  co_return Result<void>{};
}

// Returns the L2 table for `l1_idx`, allocating it or copying a shared one
// first: refcounts, then the table, then the L1 entry, each on disk. If the
// table cannot be written, nothing points at the new cluster yet: it is
// freed again (QEMU's l2_allocate). If the L1 entry cannot be written, the
// cluster is kept, since the disk may point at it.
Task<Result<std::shared_ptr<Table>>> Qcow2Driver::co_writable_l2(uint64_t l1_idx) {
  if (l1_idx >= l1_.size()) STRATA_CO_TRY(co_await co_grow_l1(l1_idx + 1));
  uint64_t entry = l1_[l1_idx];
  // COPIED without an offset (hostile images) means unallocated, as in QEMU.
  if ((entry & kCopied) && (entry & kOffsetMask)) {
    // As QEMU, a table about to change must not be other metadata.
    STRATA_CO_TRY(check_metadata_write(entry & kOffsetMask, cluster_size(), kMetaActiveL2));
    co_return co_await co_l2_table(l1_idx);
  }
  if (lazy_refcounts_) STRATA_CO_TRY(co_await co_set_dirty_bit(true));
  STRATA_CO_TRY_ASSIGN(uint64_t fresh, co_await refcounts_->co_alloc(1));
  auto table = co_await co_fill_new_l2(l1_idx, entry, fresh);
  if (!table) {
    l2_cache_->discard(fresh);
    refcounts_->free_later(fresh, 1);
    co_return std::move(table).error();
  }
  l1_[l1_idx] = fresh | kCopied;
  STRATA_CO_TRY(co_await co_write_l1_entry(l1_idx));
  if (entry & kOffsetMask) refcounts_->free_later(entry & kOffsetMask, 1);
  co_return table;
}

// The new table at `fresh`: empty, or a copy of the one `old_entry` names,
// written and flushed after the refcounts.
Task<Result<std::shared_ptr<Table>>> Qcow2Driver::co_fill_new_l2(uint64_t l1_idx,
                                                                 uint64_t old_entry,
                                                                 uint64_t fresh) {
  std::shared_ptr<Table> old;
  if (old_entry & kOffsetMask) {
    STRATA_CO_TRY_ASSIGN(old, co_await co_l2_table(l1_idx));
  }
  STRATA_CO_TRY_ASSIGN(auto table, co_await l2_cache_->co_get_new(fresh));
  if (old) std::memcpy(table->bytes(), old->bytes(), cluster_size());
  STRATA_CO_TRY(co_await co_l2_barrier());
  STRATA_CO_TRY(check_metadata_write(fresh, cluster_size(), 0));
  STRATA_CO_TRY(co_await file_->co_pwritev(fresh, table->data.iov(), 0));
  STRATA_CO_TRY(co_await file_->co_flush());
  co_return table;
}

// The run of guest bytes from `offset` (at most `bytes`, within one L2
// table) that shares one subcluster type and, where it has host clusters,
// continues contiguously in the data file (QEMU's qcow2_get_host_offset).
Task<Result<Mapping>> Qcow2Driver::co_map(uint64_t offset, uint64_t bytes) {
  uint64_t cs = cluster_size();
  uint64_t l2_span = cs << l2_bits_;
  uint64_t max_bytes = std::min(bytes, l2_span - (offset & (l2_span - 1)));
  Mapping m;
  m.bytes = max_bytes;
  uint64_t l1i = l1_index(offset);
  if (l1i >= l1_.size()) co_return m;
  STRATA_CO_TRY_ASSIGN(auto table, co_await co_l2_table(l1i));
  if (!table) co_return m;
  STRATA_CO_TRY(count_run(offset, max_bytes, *table, m));
  co_return m;
}

Result<void> Qcow2Driver::count_run(uint64_t offset, uint64_t max_bytes, const Table& table,
                                    Mapping& m) {
  uint64_t cs = cluster_size();
  uint64_t in_cluster = offset & (cs - 1);
  uint64_t first = l2_index(offset);
  unsigned sc = sc_index(offset);
  L2Entry e0 = l2fmt_.load(table.bytes(), first);
  m.entry = e0.entry;
  m.type = l2fmt_.subcluster_type(e0, sc);
  bool zero = m.type == ClusterType::kZeroPlain || m.type == ClusterType::kZeroAlloc;
  if (zero && !l2fmt_.v3) {
    return signal_corruption(
        "Zero cluster entry found in pre-v3 image (L2 index: " + std::to_string(first) + ")");
  }
  if (m.type == ClusterType::kCompressed && external_data()) {
    return signal_corruption(
        "Compressed cluster entry found in image with external data file (L2 index: " +
        std::to_string(first) + ")");
  }
  if (m.type != ClusterType::kCompressed && (e0.entry & kL2ReservedMask)) {
    return signal_corruption("L2 entry with reserved bits set");
  }
  bool has_host = m.type == ClusterType::kNormal || m.type == ClusterType::kZeroAlloc ||
                  m.type == ClusterType::kUnallocatedAlloc;
  uint64_t base = 0;
  if (has_host) {
    STRATA_TRY_ASSIGN(base, checked_host_cluster(e0.entry, offset >> cluster_bits_));
    m.host_offset = base + in_cluster;
  }
  uint64_t nclusters = div_round_up(in_cluster + max_bytes, cs);
  uint64_t count = 0;  // subclusters from `sc` of the first cluster
  for (uint64_t i = 0; i < nclusters; i++) {
    unsigned from = i == 0 ? sc : 0;
    L2Entry e = l2fmt_.load(table.bytes(), first + i);
    ClusterType type;
    unsigned run = l2fmt_.same_type_run(e, from, &type);
    if (run == 0) return invalid_entry(l1_index(offset), first + i);
    if (i == 0 && type == ClusterType::kCompressed) {
      count = run;
      break;
    }
    if (i > 0 && (type != m.type || (has_host && (e.entry & kOffsetMask) != base + i * cs))) break;
    count += run;
    if (from + run < l2fmt_.subclusters()) break;
  }
  uint64_t available = (count + sc) << l2fmt_.subcluster_bits();
  m.bytes = std::min(in_cluster + max_bytes, available) - in_cluster;
  return {};
}

// Drops this entry's reference to its host clusters (compressed data may
// share them). Data in an external data file has no refcounts. With
// `discard`, clusters that become free are discarded in the file.
void Qcow2Driver::free_cluster_entry(uint64_t entry, bool discard) {
  uint64_t cs = cluster_size();
  ClusterType type = l2fmt_.cluster_type(entry);
  if (type == ClusterType::kCompressed) {
    CompressedExtent c = l2fmt_.compressed_extent(entry);
    uint64_t first = c.offset / cs;
    refcounts_->free_later(first * cs, div_round_up(c.offset + c.bytes, cs) - first, discard);
    return;
  }
  uint64_t off = entry & kOffsetMask;
  if (off && !external_data() && type != ClusterType::kUnallocated)
    refcounts_->free_later(off, 1, discard);
}

Task<void> Qcow2Driver::co_wait_inflight(uint64_t offset, uint64_t bytes) {
  uint64_t first = offset >> cluster_bits_;
  uint64_t last = (offset + std::max<uint64_t>(bytes, 1) - 1) >> cluster_bits_;
  for (;;) {
    InflightAlloc* blocker = nullptr;
    for (InflightAlloc* a : inflight_) {
      if (a->first_cluster <= last && first < a->first_cluster + a->clusters) {
        blocker = a;
        break;
      }
    }
    if (!blocker) co_return;
    lock_->unlock();
    co_await blocker->done.wait();
    co_await lock_->co_lock();
  }
}

// QEMU's qcow2_detect_metadata_preallocation: whether the image refcounts
// clearly more clusters than its file occupies (a tenth more, and at least
// two), as after metadata preallocation or when data clusters were left
// sparse in the file. Then the file is asked which data reads as zeroes.
Task<Result<bool>> Qcow2Driver::co_detect_metadata_preallocation() {
  struct stat st;
  if (::stat(file_->node()->driver().filename().c_str(), &st) != 0) co_return false;
  uint64_t cs = cluster_size();
  uint64_t real_clusters = uint64_t(st.st_blocks) * 512 / cs;
  uint64_t threshold = std::max(real_clusters * 10 / 9, real_clusters + 2);
  uint64_t end = div_round_up(file_->node()->size(), cs);
  uint64_t count = 0;
  for (uint64_t i = 0; i < end && count < threshold; i++) {
    STRATA_CO_TRY_ASSIGN(uint64_t rc, co_await refcounts_->co_get(i));
    count += rc != 0;
  }
  co_return count >= threshold;
}

Task<Result<BlockStatus>> Qcow2Driver::co_block_status(uint64_t offset, uint64_t bytes) {
  Mapping m;
  {
    co_await lock_->co_lock();
    CoMutex::Guard guard(lock_.get());
    if (!metadata_prealloc_checked_) {
      auto detected = co_await co_detect_metadata_preallocation();
      metadata_prealloc_ = detected && *detected;
      metadata_prealloc_checked_ = true;
    }
    STRATA_CO_TRY_ASSIGN(m, co_await co_map(offset, bytes));
  }
  BlockStatus st;
  st.bytes = m.bytes;
  switch (m.type) {
    case ClusterType::kUnallocated:
    case ClusterType::kInvalid:
      break;
    case ClusterType::kUnallocatedAlloc:  // reads from the backing file
      st.flags = kStatusOffsetValid;
      break;
    case ClusterType::kZeroPlain:
      st.flags = kStatusZero;
      break;
    case ClusterType::kZeroAlloc:
      st.flags = kStatusZero | kStatusOffsetValid;
      break;
    case ClusterType::kNormal:
      st.flags = kStatusData | kStatusOffsetValid;
      if (metadata_prealloc_) st.flags |= kStatusZeroFromMap;
      break;
    case ClusterType::kCompressed:
      st.flags = kStatusData;
      break;
  }
  if ((st.flags & kStatusOffsetValid) && data_file_) {
    st.map_offset = m.host_offset;
    st.map_node = data_file_->node();
  } else {
    st.flags &= ~kStatusOffsetValid;
  }
  co_return st;
}

Task<Result<void>> Qcow2Driver::co_truncate(uint64_t size, bool exact, Preallocation prealloc) {
  uint64_t old_size = header_.size;
  if (prealloc != Preallocation::kOff && size < old_size) {
    co_return Error{ENOTSUP, "Preallocation can't be used for shrinking an image"};
  }
  // As QEMU: a raw data file stays a complete raw image.
  if (header_.data_file_raw() && prealloc == Preallocation::kOff && size > old_size) {
    prealloc = Preallocation::kMetadata;
  }
  uint64_t cs = cluster_size();
  if (size % 512) co_return Error{EINVAL, "The new size must be a multiple of 512"};
  if (external_data() && !data_file_) co_return Error{EIO, "qcow2: the data file is not open"};
  // As QEMU: v2 snapshots need not record their size, so none may differ.
  if (!snapshots_.empty() && header_.version < 3) {
    co_return Error{ENOTSUP, "Can't resize a v2 image which has snapshots"};
  }
  STRATA_CO_TRY(co_await co_check_qcow2_bitmaps_resizable(node()));
  if (size < header_.size) {
    uint64_t from = round_up(size, cs);
    if (from < header_.size) {
      co_await lock_->co_lock();
      CoMutex::Guard guard(lock_.get());
      co_await co_wait_inflight(from, header_.size - from);
      STRATA_CO_TRY(co_await co_discard_clusters(from, header_.size - from, true));
    }
  }
  {
    co_await lock_->co_lock();
    CoMutex::Guard guard(lock_.get());
    uint64_t needed = div_round_up(size, cs << l2_bits_);
    STRATA_CO_TRY(co_await co_grow_l1(needed));
    STRATA_CO_TRY(co_await co_flush_metadata());
    if (external_data() && prealloc == Preallocation::kOff) {
      STRATA_CO_TRY(co_await data_file_->co_truncate(size, exact, Preallocation::kOff));
    }
    uint8_t b[8];
    store_be64(b, size);
    STRATA_CO_TRY(co_await file_->co_pwrite(24, {b, 8}));
    STRATA_CO_TRY(co_await file_->co_flush());
    header_.size = size;
    if (size < old_size) STRATA_CO_TRY(co_await co_release_tail(size));
  }
  co_return co_await co_preallocate(old_size, size, prealloc);
}

// After a shrink, as QEMU: L2 tables past the new end are freed, the
// clusters freed are discarded in the file, and the file is cut after the
// last cluster still in use.
Task<Result<void>> Qcow2Driver::co_release_tail(uint64_t size) {
  uint64_t cs = cluster_size();
  for (uint64_t l1i = div_round_up(size, cs << l2_bits_); l1i < l1_.size(); l1i++) {
    uint64_t l2 = l1_[l1i] & kOffsetMask;
    if (!l2) continue;
    STRATA_CO_TRY(co_await co_set_l1_entry(l1i, 0));
    l2_cache_->discard(l2);
    refcounts_->free_later(l2, 1);
  }
  STRATA_CO_TRY(co_await l2_cache_->co_flush());
  STRATA_CO_TRY(co_await file_->co_flush());
  STRATA_CO_TRY(co_await refcounts_->co_apply_pending_frees(true));
  STRATA_CO_TRY(co_await refcounts_->co_flush());
  STRATA_CO_TRY(co_await file_->co_flush());
  co_await co_discard_freed();
  STRATA_CO_TRY_ASSIGN(uint64_t end, co_await refcounts_->co_end_index());
  if (end * cs < file_->node()->size()) {
    STRATA_CO_TRY(co_await file_->co_truncate(end * cs, false, Preallocation::kOff));
  }
  co_return Result<void>{};
}

}  // namespace strata::qcow2
