// qcow2: reading and writing guest data, with copy-on-write.
#include <algorithm>
#include <cstring>

#include "block/drivers/qcow2/compress.h"
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
}  // namespace

uint64_t Qcow2Driver::backing_bytes(uint64_t offset, uint64_t bytes) const {
  Child* below = backing();
  uint64_t bsize = below ? below->node()->size() : 0;
  return offset < bsize ? std::min(bytes, bsize - offset) : 0;
}

Task<Result<void>> Qcow2Driver::co_read_backing(uint64_t offset, const IoVec& iov) {
  uint64_t n = backing_bytes(offset, iov.size());
  if (n) STRATA_CO_TRY(co_await backing()->co_preadv(offset, iov.slice(0, n), 0));
  if (n < iov.size()) iov.fill(n, iov.size() - n, 0);
  co_return Result<void>{};
}

Task<Result<void>> Qcow2Driver::co_read_compressed(uint64_t entry, uint64_t in_cluster,
                                                   const IoVec& iov) {
  uint32_t shift = 62 - (cluster_bits_ - 8);
  uint64_t off = entry & ((uint64_t(1) << shift) - 1);
  uint64_t sectors = ((entry >> shift) & ((uint64_t(1) << (cluster_bits_ - 8)) - 1)) + 1;
  uint64_t csize = sectors * 512 - (off & 511);
  AlignedBuffer in(csize);
  STRATA_CO_TRY(co_await file_->co_preadv(off, in.iov(), 0));
  AlignedBuffer out(cluster_size());
  if (auto r = inflate_cluster(in.span(), out.span()); !r) co_return r;
  iov.copy_from(0, out.data() + in_cluster, iov.size());
  co_return Result<void>{};
}

Task<Result<void>> Qcow2Driver::co_read_run(uint64_t offset, const Mapping& m, const IoVec& iov) {
  switch (m.type) {
    case ClusterType::kUnallocated:
      co_return co_await co_read_backing(offset, iov);
    case ClusterType::kZeroPlain:
    case ClusterType::kZeroAlloc:
      iov.fill(0, iov.size(), 0);
      co_return Result<void>{};
    case ClusterType::kNormal:
      co_return co_await file_->co_preadv(m.host_offset, iov, 0);
    case ClusterType::kCompressed:
      co_return co_await co_read_compressed(m.entry, offset & (cluster_size() - 1), iov);
  }
  co_return Result<void>{};
}

Task<Result<void>> Qcow2Driver::co_preadv(uint64_t offset, const IoVec& iov, uint32_t) {
  for (uint64_t pos = 0; pos < iov.size();) {
    Mapping m;
    {
      co_await lock_->co_lock();
      CoMutex::Guard guard(lock_.get());
      STRATA_CO_TRY_ASSIGN(m, co_await co_map(offset + pos, iov.size() - pos));
    }
    STRATA_CO_TRY(co_await co_read_run(offset + pos, m, iov.slice(pos, m.bytes)));
    pos += m.bytes;
  }
  co_return Result<void>{};
}

// Old content of a guest cluster (for copy-on-write): bytes [from, from +
// iov.size()) of the cluster as `entry` described it.
Task<Result<void>> Qcow2Driver::co_read_old_cluster(uint64_t guest_cluster, uint64_t entry,
                                                    uint64_t from, const IoVec& iov) {
  Mapping m;
  m.type = classify(entry);
  m.entry = entry;
  m.host_offset = (entry & kOffsetMask) + from;
  co_return co_await co_read_run((guest_cluster << cluster_bits_) + from, m, iov);
}

// Whether a copy-on-write region starting at byte `from` of a guest cluster
// (as `entry` described it) reads as zeroes without reading anything: zero
// clusters, and unallocated ones with no backing data from there on.
bool Qcow2Driver::cow_reads_zero(uint64_t guest_cluster, uint64_t entry, uint64_t from) const {
  switch (classify(entry)) {
    case ClusterType::kZeroPlain:
    case ClusterType::kZeroAlloc:
      return true;
    case ClusterType::kUnallocated:
      return backing_bytes((guest_cluster << cluster_bits_) + from, 1) == 0;
    default:
      return false;
  }
}

// Writes the guest data of an allocating write into the new clusters at
// `host`, with the copy-on-write head and tail. When head and tail read as
// zeroes, the clusters are zeroed by the file (fallocate, no data written)
// and only the guest bytes are written, as QEMU does.
Task<Result<void>> Qcow2Driver::co_write_new_clusters(uint64_t host, const CowPlan& cow,
                                                      const IoVec& iov) {
  uint64_t cs = cluster_size();
  uint64_t last = cow.first_cluster + cow.clusters - 1;
  uint64_t tail_from = cs - cow.tail;
  STRATA_CO_TRY(check_overlap(host, cow.clusters * cs));
  bool zero_cow = (cow.head || cow.tail) &&
                  (!cow.head || cow_reads_zero(cow.first_cluster, cow.old->front(), 0)) &&
                  (!cow.tail || cow_reads_zero(last, cow.old->back(), tail_from));
  if (zero_cow) {
    auto zeroed = co_await file_->co_pwrite_zeroes(host, cow.clusters * cs, kReqNoFallback);
    if (zeroed) co_return co_await file_->co_pwritev(host + cow.head, iov, 0);
  }
  AlignedBuffer head_buf(cow.head), tail_buf(cow.tail);
  if (cow.head) {
    STRATA_CO_TRY(
        co_await co_read_old_cluster(cow.first_cluster, cow.old->front(), 0, head_buf.iov()));
  }
  if (cow.tail) {
    STRATA_CO_TRY(co_await co_read_old_cluster(last, cow.old->back(), tail_from, tail_buf.iov()));
  }
  IoVec full;
  if (cow.head) full.append(head_buf.data(), cow.head);
  full.append(iov);
  if (cow.tail) full.append(tail_buf.data(), cow.tail);
  co_return co_await file_->co_pwritev(host, full, 0);
}

Task<Result<uint64_t>> Qcow2Driver::co_write_allocating(uint64_t offset, const IoVec& iov,
                                                        uint64_t nclusters,
                                                        std::vector<uint64_t> old_entries) {
  uint64_t cs = cluster_size();
  uint64_t first_cluster = offset >> cluster_bits_;
  uint64_t head = offset & (cs - 1);
  uint64_t end = head + iov.size();
  uint64_t tail = round_up(end, cs) - end;
  // Under the lock: allocate, and announce the allocation.
  STRATA_CO_TRY_ASSIGN(uint64_t host, co_await refcounts_->co_alloc(nclusters));
  InflightAlloc alloc(*loop_, first_cluster, nclusters);
  InflightScope scope(inflight_, &alloc);
  lock_->unlock();

  CowPlan cow{first_cluster, nclusters, head, tail, &old_entries};
  Result<void> r = co_await co_write_new_clusters(host, cow, iov);

  co_await lock_->co_lock();
  if (!r) {
    refcounts_->free_later(host, nclusters);
    co_return std::move(r).error();
  }
  auto table = co_await co_writable_l2(l1_index(offset));
  if (!table) {
    refcounts_->free_later(host, nclusters);
    co_return std::move(table).error();
  }
  uint8_t* t = (*table)->bytes();
  uint64_t first_idx = l2_index(offset);
  for (uint64_t j = 0; j < nclusters; j++) {
    store_be64(t + (first_idx + j) * 8, (host + j * cs) | kCopied);
    free_cluster_entry(old_entries[j]);
  }
  l2_cache_->mark_dirty(**table);
  if (refcounts_->pending_count() > kMaxPendingFrees) STRATA_CO_TRY(co_await co_flush_metadata());
  co_return iov.size();
}

// Writes the longest prefix of the request that maps one way: in place into
// clusters this image owns, or into newly allocated clusters.
Task<Result<uint64_t>> Qcow2Driver::co_write_step(uint64_t offset, const IoVec& iov) {
  uint64_t cs = cluster_size();
  co_await lock_->co_lock();
  CoMutex::Guard guard(lock_.get());
  co_await co_wait_inflight(offset, iov.size());
  uint64_t l1i = l1_index(offset);
  if (lazy_refcounts_) STRATA_CO_TRY(co_await co_set_dirty_bit(true));
  STRATA_CO_TRY_ASSIGN(auto table, co_await co_writable_l2(l1i));
  uint64_t in_cluster = offset & (cs - 1);
  uint64_t l2_span = cs << l2_bits_;
  uint64_t span = std::min<uint64_t>(iov.size(), l2_span - (offset & (l2_span - 1)));
  uint64_t nclusters = div_round_up(in_cluster + span, cs);
  uint64_t first = l2_index(offset);
  const uint8_t* t = table->bytes();
  auto in_place = [&](uint64_t e) { return classify(e) == ClusterType::kNormal && (e & kCopied); };
  uint64_t e0 = load_be64(t + first * 8);
  uint64_t count = 1;
  if (in_place(e0)) {
    STRATA_CO_TRY_ASSIGN(uint64_t base, checked_host_offset(e0));
    while (count < nclusters) {
      uint64_t e = load_be64(t + (first + count) * 8);
      if (!in_place(e) || (e & kOffsetMask) != base + count * cs) break;
      count++;
    }
    uint64_t n = std::min(span, count * cs - in_cluster);
    table.reset();
    STRATA_CO_TRY(check_overlap(base + in_cluster, n));
    lock_->unlock();
    auto r = co_await file_->co_pwritev(base + in_cluster, iov.slice(0, n), 0);
    co_await lock_->co_lock();
    if (!r) co_return std::move(r).error();
    co_return n;
  }
  std::vector<uint64_t> old{e0};
  while (count < nclusters) {
    uint64_t e = load_be64(t + (first + count) * 8);
    if (in_place(e)) break;
    old.push_back(e);
    count++;
  }
  for (uint64_t e : old) {
    if (classify(e) == ClusterType::kNormal || classify(e) == ClusterType::kZeroAlloc) {
      STRATA_CO_TRY(checked_host_offset(e));
    }
  }
  uint64_t n = std::min(span, count * cs - in_cluster);
  table.reset();
  co_return co_await co_write_allocating(offset, iov.slice(0, n), count, std::move(old));
}

// Compressed write of whole clusters (the last one may be partial): each is
// deflated on the thread pool and packed into shared host clusters; a
// cluster that does not shrink, or that is already allocated, is written
// normally.
Task<Result<void>> Qcow2Driver::co_write_compressed(uint64_t offset, const IoVec& iov) {
  uint64_t cs = cluster_size();
  if (offset % cs || (iov.size() % cs && offset + iov.size() != header_.size)) {
    co_return Error{EINVAL, "Compressed writes must be cluster aligned"};
  }
  AlignedBuffer in(cs), out(cs);
  for (uint64_t pos = 0; pos < iov.size(); pos += cs) {
    uint64_t len = std::min(cs, iov.size() - pos);
    std::memset(in.data(), 0, cs);
    iov.copy_to(pos, in.data(), len);
    size_t packed = co_await loop_->offload([&in, &out, cs] {
      return deflate_cluster({in.data(), cs}, {out.data(), cs - 1});
    });
    STRATA_CO_TRY_ASSIGN(bool done, co_await co_store_compressed(offset + pos, out.data(), packed));
    if (!done) STRATA_CO_TRY(co_await co_pwritev(offset + pos, iov.slice(pos, len), 0));
  }
  co_return Result<void>{};
}

// Links `len` compressed bytes as the cluster at guest `offset`; false when
// the cluster must be written normally instead.
Task<Result<bool>> Qcow2Driver::co_store_compressed(uint64_t offset, const uint8_t* data,
                                                    size_t len) {
  if (len == 0) co_return false;
  co_await lock_->co_lock();
  CoMutex::Guard guard(lock_.get());
  co_await co_wait_inflight(offset, 1);
  STRATA_CO_TRY_ASSIGN(auto table, co_await co_writable_l2(l1_index(offset)));
  uint8_t* slot = table->bytes() + l2_index(offset) * 8;
  uint64_t old = load_be64(slot);
  ClusterType type = classify(old);
  if (type != ClusterType::kUnallocated && type != ClusterType::kZeroPlain) co_return false;
  table.reset();
  STRATA_CO_TRY_ASSIGN(uint64_t host, co_await refcounts_->co_alloc_bytes(len));
  auto r = co_await file_->co_pwrite(host, {data, len});
  if (!r) {
    uint64_t first = host / cluster_size();
    refcounts_->free_later(first * cluster_size(), (host + len - 1) / cluster_size() - first + 1);
    co_return std::move(r).error();
  }
  uint32_t shift = 62 - (cluster_bits_ - 8);
  uint64_t sectors = (host + len - 1) / 512 - host / 512;
  STRATA_CO_TRY_ASSIGN(table, co_await co_writable_l2(l1_index(offset)));
  store_be64(table->bytes() + l2_index(offset) * 8, kCompressed | (sectors << shift) | host);
  l2_cache_->mark_dirty(*table);
  co_return true;
}

Task<Result<void>> Qcow2Driver::co_pwritev(uint64_t offset, const IoVec& iov, uint32_t flags) {
  if (corrupt_) co_return Error{EIO, "qcow2: image is corrupt"};
  if (flags & kReqWriteCompressed) co_return co_await co_write_compressed(offset, iov);
  for (uint64_t pos = 0; pos < iov.size();) {
    STRATA_CO_TRY_ASSIGN(uint64_t n,
                         co_await co_write_step(offset + pos, iov.slice(pos, iov.size() - pos)));
    pos += n;
  }
  co_return Result<void>{};
}

}  // namespace strata::qcow2
