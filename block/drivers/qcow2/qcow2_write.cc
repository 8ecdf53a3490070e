// qcow2: guest writes, as QEMU's qcow2_alloc_host_offset, calculate_l2_meta,
// perform_cow and qcow2_alloc_cluster_link_l2.
//
// A write is done in steps, each within one L2 table:
// - clusters this image owns (allocated, COPIED) are written in place; when
//   subclusters that are not allocated yet (extended L2) or a preallocated
//   zero cluster are written, the part of their first and last subcluster
//   outside the write is copied from what they read as (backing file or
//   zeroes) and the L2 entry is updated afterwards;
// - other clusters get new host clusters (the guest offset itself with an
//   external data file), written with what the old ones read as around the
//   data: the whole clusters, or without extended L2 only from the first to
//   the last subcluster that held data, or for unallocated clusters only the
//   written subclusters. The new entries keep the old subcluster bits and
//   mark the written subclusters allocated.
// When the copied parts read as zeroes the region is zeroed by the data
// file first and only the guest bytes are written.
#include <algorithm>
#include <cstring>

#include "block/drivers/qcow2/qcow2.h"

namespace strata::qcow2 {

namespace {
// Pending decrements are applied (after a metadata flush) once this many
// accumulate, so that freed clusters become reusable without a guest flush.
constexpr size_t kMaxPendingFrees = 4096;

// Removes an in-flight allocation and wakes its waiters when it goes out of
// scope.
class InflightScope {
 public:
  InflightScope(std::list<InflightAlloc*>& list, InflightAlloc* a) : list_(list), a_(a) {
    list_.push_back(a_);
  }
  ~InflightScope() {
    list_.remove(a_);
    a_->done.wake_all();
  }

 private:
  std::list<InflightAlloc*>& list_;
  InflightAlloc* a_;
};

unsigned trailing_zeros32(uint32_t v) {
  return v == 0 ? 32 : unsigned(__builtin_ctz(v));
}
unsigned leading_zeros32(uint32_t v) {
  return v == 0 ? 32 : unsigned(__builtin_clz(v));
}

bool has_host(ClusterType t) {
  return t == ClusterType::kNormal || t == ClusterType::kZeroAlloc ||
         t == ClusterType::kUnallocatedAlloc;
}
}  // namespace

// Writes the longest prefix of the request that maps one way.
Task<Result<uint64_t>> Qcow2Driver::co_write_step(uint64_t offset, const IoVec& iov) {
  co_await lock_->co_lock();
  CoMutex::Guard guard(lock_.get());
  co_await co_wait_inflight(offset, iov.size());
  if (lazy_refcounts_) STRATA_CO_TRY(co_await co_set_dirty_bit(true));
  STRATA_CO_TRY_ASSIGN(auto table, co_await co_writable_l2(l1_index(offset)));
  uint64_t l2_span = cluster_size() << l2_bits_;
  uint64_t span = std::min<uint64_t>(iov.size(), l2_span - (offset & (l2_span - 1)));
  L2Entry e0 = l2fmt_.load(table->bytes(), l2_index(offset));
  if (!l2fmt_.needs_new_cluster(e0.entry)) {
    co_return co_await co_write_in_place(offset, iov.slice(0, span), *table);
  }
  co_return co_await co_write_allocating(offset, iov.slice(0, span), *table);
}

// Clusters this image owns, contiguous on the host (QEMU's handle_copied).
// `table` is used only before the lock is dropped.
Task<Result<uint64_t>> Qcow2Driver::co_write_in_place(uint64_t offset, const IoVec& iov,
                                                      const Table& table) {
  uint64_t cs = cluster_size();
  uint64_t in_cluster = offset & (cs - 1);
  uint64_t first = l2_index(offset);
  uint64_t nclusters = div_round_up(in_cluster + iov.size(), cs);
  CowPlan plan;
  plan.keep_old = true;
  plan.first_cluster = offset >> cluster_bits_;
  plan.old.push_back(l2fmt_.load(table.bytes(), first));
  STRATA_CO_TRY_ASSIGN(plan.host, checked_host_cluster(plan.old[0].entry, plan.first_cluster));
  while (plan.old.size() < nclusters) {
    L2Entry e = l2fmt_.load(table.bytes(), first + plan.old.size());
    if (l2fmt_.needs_new_cluster(e.entry) ||
        (e.entry & kOffsetMask) != plan.host + plan.old.size() * cs) {
      break;
    }
    plan.old.push_back(e);
  }
  plan.clusters = plan.old.size();
  uint64_t n = std::min<uint64_t>(iov.size(), plan.clusters * cs - in_cluster);
  STRATA_CO_TRY_ASSIGN(bool update, plan_cow(offset, n, plan));
  if (update) co_return co_await co_write_planned(offset, iov.slice(0, n), std::move(plan));
  uint64_t host = plan.host + in_cluster;
  if (data_file_ == file_) STRATA_CO_TRY(check_overlap(host, n));
  lock_->unlock();
  auto r = co_await data_file_->co_pwritev(host, iov.slice(0, n), 0);
  co_await lock_->co_lock();
  if (!r) co_return std::move(r).error();
  co_return n;
}

// Clusters that need new host clusters (QEMU's handle_alloc).
Task<Result<uint64_t>> Qcow2Driver::co_write_allocating(uint64_t offset, const IoVec& iov,
                                                        const Table& table) {
  uint64_t cs = cluster_size();
  uint64_t in_cluster = offset & (cs - 1);
  uint64_t first = l2_index(offset);
  uint64_t nclusters = div_round_up(in_cluster + iov.size(), cs);
  CowPlan plan;
  plan.first_cluster = offset >> cluster_bits_;
  for (uint64_t i = 0; i < nclusters; i++) {
    L2Entry e = l2fmt_.load(table.bytes(), first + i);
    if (i > 0 && !l2fmt_.needs_new_cluster(e.entry)) break;
    ClusterType t = l2fmt_.cluster_type(e.entry);
    if (t == ClusterType::kNormal || t == ClusterType::kZeroAlloc) {
      STRATA_CO_TRY(checked_host_cluster(e.entry, plan.first_cluster + i));
    }
    plan.old.push_back(e);
  }
  plan.clusters = plan.old.size();
  uint64_t n = std::min<uint64_t>(iov.size(), plan.clusters * cs - in_cluster);
  STRATA_CO_TRY(plan_cow(offset, n, plan));
  if (external_data()) {
    plan.host = plan.first_cluster << cluster_bits_;
  } else {
    STRATA_CO_TRY_ASSIGN(plan.host, co_await refcounts_->co_alloc(plan.clusters));
  }
  co_return co_await co_write_planned(offset, iov.slice(0, n), std::move(plan));
}

// The region of the clusters a write of `bytes` at `offset` covers, with the
// parts to copy (QEMU's calculate_l2_meta); false when the clusters are kept
// and every subcluster written is allocated already (no copy, no L2 change).
Result<bool> Qcow2Driver::plan_cow(uint64_t offset, uint64_t bytes, CowPlan& plan) {
  uint64_t cs = cluster_size();
  uint32_t sc_bits = l2fmt_.subcluster_bits();
  uint64_t start_to = offset & (cs - 1);
  uint64_t end_from = start_to + bytes;
  bool skip = plan.keep_old;
  for (uint64_t i = 0; i < plan.clusters; i++) {
    ClusterType type = l2fmt_.subcluster_type(plan.old[i], 0);
    if (skip) {
      uint64_t from = std::max(start_to, i * cs) - i * cs;
      uint64_t to = std::min(end_from, (i + 1) * cs) - i * cs;
      unsigned first_sc = unsigned(from >> sc_bits), last_sc = unsigned((to - 1) >> sc_bits);
      unsigned run = l2fmt_.same_type_run(plan.old[i], first_sc, &type);
      if (type != ClusterType::kNormal || first_sc + run <= last_sc) skip = false;
    }
    if (type == ClusterType::kInvalid) {
      return invalid_entry(l1_index(offset), l2_index(offset) + i);
    }
  }
  if (skip) return false;
  plan.start = cow_start(offset, plan);
  plan.head = start_to - plan.start;
  plan.tail = cow_end(offset + bytes, plan) - end_from;
  return true;
}

// Where the written region starts in the first cluster: the start of the
// written subcluster, or of the cluster's data when the cluster is new.
uint64_t Qcow2Driver::cow_start(uint64_t offset, const CowPlan& plan) const {
  uint32_t sc_bits = l2fmt_.subcluster_bits();
  const L2Entry& head = plan.old.front();
  unsigned sc = sc_index(offset);
  ClusterType type = l2fmt_.subcluster_type(head, sc);
  if (plan.keep_old && type == ClusterType::kNormal) return offset & (cluster_size() - 1);
  if (!plan.keep_old && type == ClusterType::kCompressed) return 0;
  if (!plan.keep_old && has_host(type)) {
    // From the first subcluster that holds data (without extended L2: 0).
    unsigned first_alloc = l2fmt_.extended ? trailing_zeros32(uint32_t(head.bitmap)) : 0;
    return uint64_t(std::min(sc, first_alloc)) << sc_bits;
  }
  return uint64_t(sc) << sc_bits;
}

// Where it ends, counted from the first cluster, for a write ending at
// guest offset `end`.
uint64_t Qcow2Driver::cow_end(uint64_t end, const CowPlan& plan) const {
  uint64_t cs = cluster_size();
  uint32_t sc_bits = l2fmt_.subcluster_bits();
  uint64_t end_from = end - (plan.first_cluster << cluster_bits_);
  const L2Entry& tail = plan.old.back();
  unsigned sc = sc_index(end - 1);
  ClusterType type = l2fmt_.subcluster_type(tail, sc);
  if (plan.keep_old && type == ClusterType::kNormal) return end_from;
  if (!plan.keep_old && type == ClusterType::kCompressed) return round_up(end_from, cs);
  if (!plan.keep_old && has_host(type)) {
    // To the last subcluster that holds data (without extended L2: the end).
    unsigned after = l2fmt_.subclusters() - sc - 1;
    unsigned last_alloc = l2fmt_.extended ? leading_zeros32(uint32_t(tail.bitmap)) : 0;
    return round_up(end_from, cs) - (uint64_t(std::min(after, last_alloc)) << sc_bits);
  }
  return round_up(end_from, subcluster_size());
}

// Whether the parts a plan copies read as zeroes without reading data:
// zero subclusters, and unallocated ones with nothing in the backing file.
Task<Result<bool>> Qcow2Driver::co_cow_reads_zero(const CowPlan& plan, uint64_t bytes) {
  uint64_t guest = (plan.first_cluster << cluster_bits_) + plan.start;
  uint64_t ranges[2][2] = {{guest, plan.head}, {guest + plan.head + bytes, plan.tail}};
  for (auto& range : ranges) {
    for (uint64_t pos = range[0], end = range[0] + range[1]; pos < end;) {
      STRATA_CO_TRY_ASSIGN(Mapping m, co_await co_map(pos, end - pos));
      bool zero = m.type == ClusterType::kZeroPlain || m.type == ClusterType::kZeroAlloc;
      bool unallocated =
          m.type == ClusterType::kUnallocated || m.type == ClusterType::kUnallocatedAlloc;
      if (!zero && !(unallocated && backing_bytes(pos, m.bytes) == 0)) co_return false;
      pos += m.bytes;
    }
  }
  co_return true;
}

// Under the lock: announces the clusters as in flight, writes the region
// without the lock, then links the L2 entries. New host clusters are freed
// again if anything fails.
Task<Result<uint64_t>> Qcow2Driver::co_write_planned(uint64_t offset, const IoVec& iov,
                                                     CowPlan plan) {
  auto give_back = [&] {
    if (!plan.keep_old && !external_data()) refcounts_->free_later(plan.host, plan.clusters);
  };
  if (plan.head || plan.tail) {
    auto zero = co_await co_cow_reads_zero(plan, iov.size());
    if (!zero) {
      give_back();
      co_return std::move(zero).error();
    }
    plan.zero_cow = *zero;
  }
  InflightAlloc alloc(*loop_, plan.first_cluster, plan.clusters);
  InflightScope scope(inflight_, &alloc);
  lock_->unlock();
  Result<void> r = co_await co_write_cow_data(offset, plan, iov);
  co_await lock_->co_lock();
  if (r) r = co_await co_link_l2(offset, iov.size(), plan);
  if (!r) {
    give_back();
    co_return std::move(r).error();
  }
  if (refcounts_->pending_count() > kMaxPendingFrees) STRATA_CO_TRY(co_await co_flush_metadata());
  co_return iov.size();
}

// Writes the guest data with the copied parts around it, as one request
// (QEMU's perform_cow with the data merged in), or zeroes the region and
// writes only the data.
Task<Result<void>> Qcow2Driver::co_write_cow_data(uint64_t offset, const CowPlan& cow,
                                                  const IoVec& iov) {
  uint64_t host = cow.host + cow.start;
  uint64_t len = cow.head + iov.size() + cow.tail;
  if (data_file_ == file_) STRATA_CO_TRY(check_overlap(host, len));
  if (cow.zero_cow) {
    auto zeroed = co_await data_file_->co_pwrite_zeroes(host, len, kReqNoFallback);
    if (zeroed) co_return co_await data_file_->co_pwritev(host + cow.head, iov, 0);
  }
  uint64_t guest = (cow.first_cluster << cluster_bits_) + cow.start;
  AlignedBuffer head_buf(cow.head), tail_buf(cow.tail);
  if (cow.head) STRATA_CO_TRY(co_await co_read_guest(guest, head_buf.iov()));
  if (cow.tail) {
    STRATA_CO_TRY(co_await co_read_guest(guest + cow.head + iov.size(), tail_buf.iov()));
  }
  IoVec full;
  if (cow.head) full.append(head_buf.data(), cow.head);
  full.append(iov);
  if (cow.tail) full.append(tail_buf.data(), cow.tail);
  co_return co_await data_file_->co_pwritev(host, full, 0);
}

// Points the entries at the written host clusters, the written subclusters
// allocated, and drops the references of replaced clusters.
Task<Result<void>> Qcow2Driver::co_link_l2(uint64_t offset, uint64_t bytes, const CowPlan& cow) {
  uint64_t cs = cluster_size();
  uint32_t sc_bits = l2fmt_.subcluster_bits();
  STRATA_CO_TRY_ASSIGN(auto table, co_await co_writable_l2(l1_index(offset)));
  uint64_t first = l2_index(offset);
  uint64_t end = cow.start + cow.head + bytes + cow.tail;
  for (uint64_t i = 0; i < cow.clusters; i++) {
    L2Entry cur = l2fmt_.load(table->bytes(), first + i);
    L2Entry fresh{(cow.host + i * cs) | kCopied, cur.bitmap};
    if (l2fmt_.extended) {
      uint64_t from = std::max(cow.start, i * cs) - i * cs;
      uint64_t to = std::min(end, (i + 1) * cs) - i * cs;
      unsigned first_sc = unsigned(from >> sc_bits), last_sc = unsigned((to - 1) >> sc_bits);
      fresh.bitmap |= alloc_range(first_sc, last_sc + 1);
      fresh.bitmap &= ~zero_range(first_sc, last_sc + 1);
    }
    l2fmt_.store(table->bytes(), first + i, fresh);
    if (!cow.keep_old && cur.entry) free_cluster_entry(cur.entry);
  }
  l2_cache_->mark_dirty(*table);
  co_return Result<void>{};
}

}  // namespace strata::qcow2
