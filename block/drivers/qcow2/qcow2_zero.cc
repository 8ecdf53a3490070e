// qcow2: write-zeroes and discard, as QEMU's qcow2_co_pwrite_zeroes,
// qcow2_subcluster_zeroize and qcow2_cluster_discard.
//
// Write-zeroes works by subcluster (the cluster without extended L2). A
// request that covers part of a subcluster is done only when the rest of
// that subcluster already reads as zeroes (then the whole subcluster is
// marked); otherwise it answers ENOTSUP and the dispatcher writes zeroes.
// Whole clusters get the zero flag (v3) or all "reads as zeroes" bits
// (extended L2), keeping their host cluster unless the caller may unmap
// (compressed clusters are always freed); parts of a cluster get zero bits.
// v2 images have no zero flag: without a backing file zeroes are a discard,
// with one ENOTSUP. With a raw external data file the data file is zeroed
// first, so it stays a complete raw image.
//
// Discard works by whole clusters: they read as zeroes afterwards (v3, and
// only where something was allocated or a backing file could show
// through), or become unallocated (v2, and a full discard: shrink, commit).
// Host clusters freed are discarded in the image file once the refcounts
// are written (co_flush_metadata): always for a full discard, for guest
// requests when the node was opened with discard=unmap.
#include <algorithm>

#include "block/drivers/qcow2/qcow2.h"

namespace strata::qcow2 {

namespace {

// Guest ranges whose clusters in an external data file lost their mapping;
// discarded in the data file afterwards (as QEMU's default
// pass-discard-request/-other), so a raw data file reads as the image.
struct DataDiscards {
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // (offset, bytes)
  void add(uint64_t offset, uint64_t bytes) {
    if (!ranges.empty() && ranges.back().first + ranges.back().second == offset) {
      ranges.back().second += bytes;
    } else {
      ranges.emplace_back(offset, bytes);
    }
  }
};

// Whether [offset, offset + bytes) of `node` reads as zeroes by block
// status alone, looking down its backing chain where it is unallocated
// (QEMU's is_zero). The range lies within the node.
Task<Result<bool>> co_chain_reads_zero(Node* node, uint64_t offset, uint64_t bytes) {
  while (bytes) {
    BlockStatus st;
    STRATA_CO_TRY_ASSIGN(st, co_await node->co_block_status(offset, bytes));
    uint64_t n = std::min(st.bytes, bytes);
    if (n == 0 || (!(st.flags & kStatusZero) && (st.flags & kStatusAllocated))) co_return false;
    Child* below = node->backing();
    if (!(st.flags & kStatusZero) && below) {
      uint64_t bsize = below->node()->size();
      uint64_t in_below = offset < bsize ? std::min(n, bsize - offset) : 0;
      if (in_below) {
        STRATA_CO_TRY_ASSIGN(bool zero,
                             co_await co_chain_reads_zero(below->node(), offset, in_below));
        if (!zero) co_return false;
      }
    } else if (!(st.flags & kStatusZero)) {
      co_return false;
    }
    offset += n;
    bytes -= n;
  }
  co_return true;
}

}  // namespace

// Whether guest range [offset, offset + bytes) reads as zeroes without
// reading data. Takes the lock itself (through block status).
Task<Result<bool>> Qcow2Driver::co_reads_zero(uint64_t offset, uint64_t bytes) {
  bytes = offset < header_.size ? std::min(bytes, header_.size - offset) : 0;
  if (bytes == 0) co_return true;
  co_return co_await co_chain_reads_zero(&node(), offset, bytes);
}

Task<Result<void>> Qcow2Driver::co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) {
  if (corrupt_) co_return Error{EIO, "qcow2: image is corrupt"};
  if (header_.version < 3 && backing()) co_return Error{ENOTSUP, "zero clusters need qcow2 v3"};
  if (external_data() && !data_file_) co_return Error{EIO, "qcow2: the data file is not open"};
  uint64_t sc = subcluster_size();
  uint64_t end = offset + bytes;
  uint64_t head = offset & (sc - 1);
  uint64_t tail = end >= header_.size ? 0 : round_up(end, sc) - end;
  if (head || tail) {
    if (head + bytes + tail > sc) co_return Error{ENOTSUP, "qcow2: unaligned zeroes"};
    STRATA_CO_TRY_ASSIGN(bool zero_head, co_await co_reads_zero(offset - head, head));
    STRATA_CO_TRY_ASSIGN(bool zero_tail, co_await co_reads_zero(end, tail));
    if (!zero_head || !zero_tail) co_return Error{ENOTSUP, "qcow2: unaligned zeroes"};
    offset -= head;
    bytes = sc;
  }
  co_await lock_->co_lock();
  CoMutex::Guard guard(lock_.get());
  co_await co_wait_inflight(offset, bytes);
  if (head || tail) {
    // The subcluster may have changed since it was looked at.
    STRATA_CO_TRY_ASSIGN(Mapping m, co_await co_map(offset, bytes));
    if (m.type != ClusterType::kUnallocated && m.type != ClusterType::kUnallocatedAlloc &&
        m.type != ClusterType::kZeroPlain && m.type != ClusterType::kZeroAlloc) {
      co_return Error{ENOTSUP, "qcow2: unaligned zeroes"};
    }
  }
  co_return co_await co_zeroize(offset, bytes, flags);
}

Task<Result<void>> Qcow2Driver::co_zeroize(uint64_t offset, uint64_t bytes, uint32_t flags) {
  if (header_.data_file_raw()) {
    STRATA_CO_TRY(co_await data_file_->co_pwrite_zeroes(offset, bytes, flags & kReqMayUnmap));
  }
  if (header_.version < 3) {
    if (backing()) co_return Error{ENOTSUP, "zero clusters need qcow2 v3"};
    co_return co_await co_discard_clusters(offset, bytes, false);
  }
  uint64_t cs = cluster_size();
  uint64_t end = offset + bytes;
  uint64_t sc_bits = l2fmt_.subcluster_bits();
  uint64_t head = std::min(end, round_up(offset, cs)) - offset;
  if (head)
    STRATA_CO_TRY(
        co_await co_zero_subclusters(offset, unsigned(div_round_up(head, 1ull << sc_bits))));
  offset += head;
  uint64_t tail = end >= header_.size ? 0 : end - std::max(offset, end / cs * cs);
  end -= tail;
  if (end > offset)
    STRATA_CO_TRY(co_await co_zero_clusters(offset, div_round_up(end - offset, cs), flags));
  if (tail)
    STRATA_CO_TRY(co_await co_zero_subclusters(end, unsigned(div_round_up(tail, 1ull << sc_bits))));
  co_return Result<void>{};
}

// Whole clusters from `offset` (QEMU's zero_in_l2_slice).
Task<Result<void>> Qcow2Driver::co_zero_clusters(uint64_t offset, uint64_t clusters,
                                                 uint32_t flags) {
  uint64_t per_table = uint64_t(1) << l2_bits_;
  DataDiscards dropped;
  for (uint64_t c = offset >> cluster_bits_, stop = c + clusters; c < stop;) {
    uint64_t l1i = c / per_table;
    uint64_t last = std::min(stop, (l1i + 1) * per_table);
    STRATA_CO_TRY_ASSIGN(auto table, co_await co_writable_l2(l1i));
    for (; c < last; c++) {
      L2Entry old = l2fmt_.load(table->bytes(), c % per_table);
      ClusterType type = l2fmt_.cluster_type(old.entry);
      bool unmap = type == ClusterType::kCompressed ||
                   ((flags & kReqMayUnmap) && l2fmt_.allocated(old.entry));
      L2Entry fresh{unmap ? 0 : old.entry, old.bitmap};
      if (l2fmt_.extended) {
        fresh.bitmap = kBitmapAllZeroes;
      } else {
        fresh.entry |= kZeroFlag;
      }
      if (fresh == old) continue;
      l2fmt_.store(table->bytes(), c % per_table, fresh);
      l2_cache_->mark_dirty(*table);
      // Freed clusters reach the file as discards when this node passes
      // guest discards on (QEMU's pass-discard-request).
      if (unmap) free_cluster_entry(old.entry, node().flags().discard_unmap);
      if (unmap && external_data()) dropped.add(c << cluster_bits_, cluster_size());
    }
  }
  co_return co_await co_discard_data(dropped.ranges);
}

// Subclusters of one cluster (QEMU's zero_l2_subclusters); compressed
// clusters cannot be zeroed in part (ENOTSUP: the dispatcher writes zeroes).
Task<Result<void>> Qcow2Driver::co_zero_subclusters(uint64_t offset, unsigned count) {
  STRATA_CO_TRY_ASSIGN(auto table, co_await co_writable_l2(l1_index(offset)));
  uint64_t idx = l2_index(offset);
  L2Entry e = l2fmt_.load(table->bytes(), idx);
  if (l2fmt_.cluster_type(e.entry) == ClusterType::kCompressed) {
    co_return Error{ENOTSUP, "qcow2: cannot zero part of a compressed cluster"};
  }
  unsigned sc = sc_index(offset);
  uint64_t bitmap = (e.bitmap | zero_range(sc, sc + count)) & ~alloc_range(sc, sc + count);
  if (bitmap != e.bitmap) {
    e.bitmap = bitmap;
    l2fmt_.store(table->bytes(), idx, e);
    l2_cache_->mark_dirty(*table);
  }
  co_return Result<void>{};
}

Task<Result<void>> Qcow2Driver::co_pdiscard(uint64_t offset, uint64_t bytes) {
  if (header_.version < 3 && backing()) {
    co_return Error{ENOTSUP, "Discard is not supported on v2 images with a backing file"};
  }
  uint64_t cs = cluster_size();
  uint64_t end = std::min(offset + bytes, round_up(header_.size, cs));
  if (offset % cs || (end % cs && end != header_.size)) {
    co_return Error{ENOTSUP, "qcow2: unaligned discard"};
  }
  co_await lock_->co_lock();
  CoMutex::Guard guard(lock_.get());
  co_await co_wait_inflight(offset, end - offset);
  co_return co_await co_discard_clusters(offset, end - offset, false);
}

// QEMU's discard_in_l2_slice over whole clusters, under the lock.
Task<Result<void>> Qcow2Driver::co_discard_clusters(uint64_t offset, uint64_t bytes, bool full) {
  uint64_t per_table = uint64_t(1) << l2_bits_;
  uint64_t stop = div_round_up(offset + bytes, cluster_size());
  DataDiscards dropped;
  for (uint64_t c = offset >> cluster_bits_; c < stop;) {
    uint64_t l1i = c / per_table;
    uint64_t last = std::min(stop, (l1i + 1) * per_table);
    bool no_table = l1i >= l1_.size() || (l1_[l1i] & kOffsetMask) == 0;
    if (no_table && (full || !backing())) {
      c = last;  // unallocated already, with nothing below to hide
      continue;
    }
    STRATA_CO_TRY_ASSIGN(auto table, co_await co_writable_l2(l1i));
    for (; c < last; c++) {
      L2Entry old = l2fmt_.load(table->bytes(), c % per_table);
      L2Entry fresh = old;
      if (full) {
        fresh = {};
      } else if (backing() || l2fmt_.allocated(old.entry)) {
        fresh = l2fmt_.extended ? L2Entry{0, kBitmapAllZeroes}
                                : L2Entry{header_.version >= 3 ? kZeroFlag : 0, 0};
      }
      if (fresh == old) continue;
      l2fmt_.store(table->bytes(), c % per_table, fresh);
      l2_cache_->mark_dirty(*table);
      // A full discard (shrink) always discards what it frees in the file;
      // a guest discard when the node passes discards on.
      free_cluster_entry(old.entry, full || node().flags().discard_unmap);
      ClusterType type = l2fmt_.cluster_type(old.entry);
      if (external_data() && (type == ClusterType::kNormal || type == ClusterType::kZeroAlloc)) {
        dropped.add(c << cluster_bits_, cluster_size());
      }
    }
  }
  co_return co_await co_discard_data(dropped.ranges);
}

Task<Result<void>> Qcow2Driver::co_discard_data(
    const std::vector<std::pair<uint64_t, uint64_t>>& ranges) {
  for (const auto& [off, len] : ranges) {
    if (!data_file_) break;
    uint64_t size = data_file_->node()->size();
    if (off < size) STRATA_CO_TRY(co_await data_file_->co_pdiscard(off, std::min(len, size - off)));
  }
  co_return Result<void>{};
}

}  // namespace strata::qcow2
