// qcow2: whole-image changes used by strata-img commit, rebase and amend:
// emptying the active layer, changing the backing file name, moving
// between compat=0.10 and compat=1.1, and changing the refcount width.
#include <algorithm>
#include <cstdio>
#include <cstring>

#include "block/drivers/qcow2/qcow2.h"

namespace strata::qcow2 {

// QEMU's make_completely_empty: the image is rebuilt around its header:
// an empty refcount table in cluster 1, its one block in cluster 2, a zeroed
// L1 from cluster 3, and the file cut after them. The dirty bit covers the
// moment when the on-disk refcounts describe nothing.
Task<Result<void>> Qcow2Driver::co_make_completely_empty() {
  uint64_t cs = cluster_size();
  uint64_t l1_clusters = div_round_up(std::max<uint64_t>(l1_.size() * 8, 1), cs);
  STRATA_CO_TRY(co_await co_flush_metadata());
  l2_cache_->clear();
  refcounts_->cache().clear();
  STRATA_CO_TRY(co_await co_set_dirty_bit(true));
  STRATA_CO_TRY(co_await file_->co_pwrite_zeroes(cs, (2 + l1_clusters) * cs, kReqMayUnmap));
  std::fill(l1_.begin(), l1_.end(), 0);
  // The first refcount block counts the header, table, block and L1.
  AlignedBuffer block(cs);
  std::memset(block.data(), 0, cs);
  for (uint64_t c = 0; c < 3 + l1_clusters; c++)
    refblock_set(block.data(), header_.refcount_order, c, 1);
  STRATA_CO_TRY(co_await file_->co_pwritev(2 * cs, block.iov(), 0));
  uint8_t entry[8];
  store_be64(entry, 2 * cs);
  STRATA_CO_TRY(co_await file_->co_pwrite(cs, {entry, 8}));
  STRATA_CO_TRY(co_await file_->co_flush());
  uint8_t fields[20];
  store_be64(fields, 3 * cs);  // l1_table_offset
  store_be64(fields + 8, cs);  // refcount_table_offset
  store_be32(fields + 16, 1);  // refcount_table_clusters
  STRATA_CO_TRY(co_await file_->co_pwrite(40, {fields, sizeof fields}));
  STRATA_CO_TRY(co_await file_->co_flush());
  header_.l1_table_offset = 3 * cs;
  header_.refcount_table_offset = cs;
  header_.refcount_table_clusters = 1;
  size_t cache_tables = refcounts_->cache().capacity();
  refcounts_ = std::make_unique<Refcounts>(cluster_bits_, header_.refcount_order, cache_tables);
  install_write_checks();
  STRATA_CO_TRY(co_await refcounts_->co_load(file_, cs, 1, check_mode_));
  STRATA_CO_TRY(co_await co_set_dirty_bit(false));
  co_return co_await file_->co_truncate((3 + l1_clusters) * cs, false, Preallocation::kOff);
}

Task<Result<void>> Qcow2Driver::co_make_empty() {
  if (!writable_) co_return Error{EPERM, "qcow2: image is read-only"};
  co_await lock_->co_lock();
  CoMutex::Guard guard(lock_.get());
  co_await co_wait_inflight(0, header_.size);
  uint64_t l1_clusters = div_round_up(std::max<uint64_t>(l1_.size() * 8, 1), cluster_size());
  // As QEMU, only when nothing else claims clusters (snapshots, bitmaps),
  // the guest data lives in this file and the new metadata fits one
  // refcount block.
  if (header_.version >= 3 && snapshots_.empty() && !header_.find_extension(kExtBitmaps) &&
      !external_data() && 3 + l1_clusters <= refcounts_->block_entries()) {
    co_return co_await co_make_completely_empty();
  }
  // Otherwise a full discard of the active layer; the clusters freed are
  // discarded in the file (QEMU's pass-discard-snapshot, on by default).
  STRATA_CO_TRY(co_await co_discard_clusters(0, round_up(header_.size, cluster_size()), true));
  STRATA_CO_TRY(co_await co_flush_metadata());
  co_return co_await file_->co_flush();
}

Task<Result<void>> Qcow2Driver::co_change_backing_file(std::string file, std::string format) {
  if (!writable_) co_return Error{EPERM, "qcow2: image is read-only"};
  if (file.size() > 1023) co_return Error{EINVAL, "Backing file name too long"};
  if (format.size() >= 16) co_return Error{EINVAL, "Backing format name too long"};
  co_await lock_->co_lock();
  CoMutex::Guard guard(lock_.get());
  Header saved = header_;
  header_.backing_file = file;
  header_.backing_format = file.empty() ? "" : format;
  header_.has_backing_format = !header_.backing_format.empty();
  header_.backing_file_size = uint32_t(file.size());
  auto r = co_await co_write_header();
  if (!r) header_ = saved;
  co_return r;
}

// Zero clusters do not exist in compat=0.10: a plain zero cluster becomes
// unallocated without a backing file and an allocated, zero-filled cluster
// with one; an allocated zero cluster is zero-filled and keeps its cluster.
Task<Result<void>> Qcow2Driver::co_expand_zero_clusters() {
  uint64_t cs = cluster_size();
  AlignedBuffer zeroes(cs);
  std::memset(zeroes.data(), 0, cs);
  for (uint64_t l1i = 0; l1i < l1_.size(); l1i++) {
    if (!(l1_[l1i] & kOffsetMask)) continue;
    STRATA_CO_TRY_ASSIGN(auto table, co_await co_writable_l2(l1i));
    for (uint64_t j = 0; j < (uint64_t(1) << l2_bits_); j++) {
      uint8_t* slot = table->bytes() + j * 8;
      uint64_t e = load_be64(slot);
      ClusterType type = l2fmt_.cluster_type(e);
      if (type != ClusterType::kZeroPlain && type != ClusterType::kZeroAlloc) continue;
      uint64_t fresh = 0;
      if (type == ClusterType::kZeroAlloc && (e & kCopied)) {
        STRATA_CO_TRY_ASSIGN(uint64_t host, checked_host_offset(e));
        STRATA_CO_TRY(check_metadata_write(host, cs));
        STRATA_CO_TRY(co_await file_->co_pwritev(host, zeroes.iov(), 0));
        fresh = e & ~kZeroFlag;
      } else {
        if (backing()) {
          STRATA_CO_TRY_ASSIGN(uint64_t host, co_await refcounts_->co_alloc(1));
          STRATA_CO_TRY(check_metadata_write(host, cs));
          STRATA_CO_TRY(co_await file_->co_pwritev(host, zeroes.iov(), 0));
          fresh = host | kCopied;
        }
        if (type == ClusterType::kZeroAlloc) free_cluster_entry(e);
      }
      // The cache's write-back barrier puts the zeroes and refcounts on disk
      // before this table.
      store_be64(slot, fresh);
      l2_cache_->mark_dirty(*table);
    }
  }
  co_return Result<void>{};
}

// Whether an L2 entry matching `match` exists in the active tables (when
// `active`) or in a snapshot's.
Task<Result<bool>> Qcow2Driver::co_find_entry(bool active, bool (*match)(uint64_t)) {
  uint64_t cs = cluster_size();
  std::vector<std::vector<uint64_t>> tables;
  if (active) tables.push_back(l1_);
  for (const auto& s : snapshots_) {
    STRATA_CO_TRY_ASSIGN(auto l1, co_await co_read_l1_table(s.l1_table_offset, s.l1_size));
    tables.push_back(std::move(l1));
  }
  for (const auto& l1 : tables) {
    for (uint64_t l1e : l1) {
      uint64_t off = l1e & kOffsetMask;
      if (!off) continue;
      if (off % cs) co_return signal_corruption("L2 table offset unaligned");
      STRATA_CO_TRY_ASSIGN(auto table, co_await l2_cache_->co_get(off));
      for (uint64_t j = 0; j < l2fmt_.entries_per_table(); j++) {
        if (match(l2fmt_.load(table->bytes(), j).entry)) co_return true;
      }
    }
  }
  co_return false;
}

Task<Result<bool>> Qcow2Driver::co_snapshots_have_zero_clusters() {
  co_return co_await co_find_entry(
      false, [](uint64_t e) { return !(e & kCompressed) && (e & kZeroFlag); });
}

Task<Result<void>> Qcow2Driver::co_downgrade() {
  if (header_.refcount_order != 4) {
    co_return Error{ENOTSUP, "compat=0.10 requires refcount_bits=16"};
  }
  if (header_.autoclear_features & kAutoclearBitmaps ||
      header_.find_extension(kExtBitmaps) != nullptr) {
    co_return Error{ENOTSUP, "Cannot downgrade an image with persistent bitmaps"};
  }
  if (external_data()) co_return Error{ENOTSUP, "Cannot downgrade an image with a data file"};
  if (header_.incompatible_features & ~(kIncompatDirty | kIncompatCompression)) {
    char hex[32];
    snprintf(hex, sizeof hex, "%#llx",
             static_cast<unsigned long long>(header_.incompatible_features & ~kIncompatDirty));
    co_return Error{ENOTSUP, std::string("Cannot downgrade an image with incompatible features ") +
                                 hex + " set"};
  }
  // Unlike QEMU, snapshots are searched too: they would become unreadable.
  if (header_.compression_type != kCompressionZlib) {
    STRATA_CO_TRY_ASSIGN(bool compressed, co_await co_find_entry(true, [](uint64_t e) {
                           return (e & kCompressed) != 0;
                         }));
    if (compressed) {
      co_return Error{EINVAL,
                      "Cannot downgrade an image with zstd compression type and existing "
                      "compressed clusters"};
    }
  }
  STRATA_CO_TRY_ASSIGN(bool snap_zero, co_await co_snapshots_have_zero_clusters());
  if (snap_zero) {
    co_return Error{ENOTSUP, "Cannot downgrade: an internal snapshot contains zero clusters"};
  }
  STRATA_CO_TRY(co_await co_expand_zero_clusters());
  STRATA_CO_TRY(co_await co_flush_metadata());
  STRATA_CO_TRY(co_await file_->co_flush());
  Header saved = header_;
  header_.version = 2;
  header_.header_length = kV2HeaderLength;
  header_.incompatible_features = 0;
  header_.compatible_features = 0;
  header_.autoclear_features = 0;
  header_.unknown_fields.clear();
  header_.compression_type = 0;
  lazy_refcounts_ = false;
  auto r = co_await co_write_header();
  if (!r) header_ = saved;
  co_return r;
}

// The refcount structure is written again with entries of `bits` bits (a
// power of two up to 64), past the end of the file, and the header switched
// to it in one write: a crash leaves either the old or the new structure.
Task<Result<void>> Qcow2Driver::co_change_refcount_width(uint32_t bits) {
  uint32_t order = uint32_t(__builtin_ctz(bits));
  uint64_t max = order == 6 ? UINT64_MAX : (uint64_t(1) << bits) - 1;
  STRATA_CO_TRY(co_await co_flush_metadata());
  STRATA_CO_TRY(co_await file_->co_flush());
  STRATA_CO_TRY_ASSIGN(uint64_t end, co_await refcounts_->co_end_index());
  std::vector<uint64_t> counts(end, 0);
  for (uint64_t c = 0; c < end; c++) {
    STRATA_CO_TRY_ASSIGN(counts[c], co_await refcounts_->co_get(c));
    if (counts[c] > max) {
      char msg[160];
      snprintf(msg, sizeof msg,
               "Cannot decrease refcount entry width to %u bits: Cluster at offset %#llx has a "
               "refcount of %llu",
               bits, static_cast<unsigned long long>(c << cluster_bits_),
               static_cast<unsigned long long>(counts[c]));
      co_return Error{EINVAL, msg};
    }
  }
  // The old table and blocks are free once the header names the new ones.
  auto drop = [&counts](uint64_t c) {
    if (c < counts.size() && counts[c]) counts[c]--;
  };
  for (uint32_t i = 0; i < refcounts_->table_clusters(); i++) {
    drop((refcounts_->table_offset() >> cluster_bits_) + i);
  }
  for (uint64_t block : refcounts_->table()) {
    if (block) drop(block >> cluster_bits_);
  }
  uint64_t first_free = std::max(end, div_round_up(file_->node()->size(), cluster_size()));
  STRATA_CO_TRY_ASSIGN(RefcountStructure fresh,
                       co_await co_write_refcount_structure(file_, cluster_bits_, order,
                                                            std::move(counts), first_free));
  co_return co_await co_install_refcounts(fresh, order);
}

// The data file options of amend, checked before anything changes (QEMU's
// messages).
Result<void> Qcow2Driver::check_amend_data_file(const AmendOptions& o) const {
  if (o.data_file && !external_data()) {
    return Error{EINVAL, "data-file can only be set for images that use an external data file"};
  }
  if (o.data_file && o.data_file->size() > 1023) return Error{EINVAL, "Data file name too long"};
  if (o.data_file_raw && *o.data_file_raw && !header_.data_file_raw()) {
    return Error{EINVAL, "data-file-raw cannot be set on existing images"};
  }
  return {};
}

Task<Result<void>> Qcow2Driver::co_amend(AmendOptions o) {
  if (!writable_) co_return Error{EPERM, "qcow2: image is read-only"};
  STRATA_CO_TRY(check_amend_data_file(o));
  uint32_t version = o.version ? *o.version : header_.version;
  // A downgrade drops lazy refcounts unless they are asked for explicitly.
  bool lazy = o.lazy_refcounts
                  ? *o.lazy_refcounts
                  : version >= 3 && (header_.compatible_features & kCompatLazyRefcounts);
  if (o.refcount_bits && *o.refcount_bits != 16 && version < 3) {
    co_return Error{EINVAL,
                    "Refcount widths other than 16 bits require compatibility level 1.1 or above "
                    "(use compat=1.1 or greater)"};
  }
  if (lazy && version < 3) {
    co_return Error{EINVAL,
                    "Lazy refcounts only supported with compatibility level 1.1 and above (use "
                    "compat=1.1 or greater)"};
  }
  co_await lock_->co_lock();
  CoMutex::Guard guard(lock_.get());
  co_await co_wait_inflight(0, header_.size);
  // As QEMU: the width changes on a v3 header (after an upgrade, before a
  // downgrade).
  bool new_width = o.refcount_bits && *o.refcount_bits != header_.refcount_bits();
  if (version < header_.version) {
    if (new_width) STRATA_CO_TRY(co_await co_change_refcount_width(*o.refcount_bits));
    STRATA_CO_TRY(co_await co_downgrade());
    co_return Result<void>{};
  }
  Header saved = header_;
  if (version > header_.version) {
    header_.version = 3;
    header_.header_length = kV3HeaderLength;
    header_.refcount_order = 4;
  }
  if (o.data_file) header_.data_file = *o.data_file;
  if (o.data_file_raw && !*o.data_file_raw) header_.autoclear_features &= ~kAutoclearDataFileRaw;
  if (lazy) {
    header_.compatible_features |= kCompatLazyRefcounts;
  } else {
    // Refcounts become exact on disk before the bit goes away.
    STRATA_CO_TRY(co_await co_flush_metadata());
    STRATA_CO_TRY(co_await file_->co_flush());
    header_.compatible_features &= ~kCompatLazyRefcounts;
    header_.incompatible_features &= ~kIncompatDirty;
  }
  lazy_refcounts_ = lazy;
  auto r = co_await co_write_header();
  if (!r) {
    header_ = saved;
    co_return r;
  }
  if (new_width) STRATA_CO_TRY(co_await co_change_refcount_width(*o.refcount_bits));
  co_return Result<void>{};
}

}  // namespace strata::qcow2
