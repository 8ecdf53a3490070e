// qcow2: preallocation (create and resize with preallocation=metadata,
// falloc or full), as QEMU: every cluster of the range gets an L2 entry
// pointing at its own host cluster; falloc reserves the host space and full
// writes zeroes to it. With extended L2 the subcluster bits are left as they
// were, so the clusters still read from the backing file (or as zeroes)
// until written. With an external data file the host cluster is the guest
// offset and the data file is extended to cover the range.
#include <algorithm>
#include <cstring>

#include "block/drivers/qcow2/qcow2.h"

namespace strata::qcow2 {

namespace {

struct HostRun {
  uint64_t offset;
  uint64_t bytes;
};

Task<Result<void>> co_fill_run(Child* file, const HostRun& run, Preallocation mode) {
  if (mode == Preallocation::kFalloc)
    co_return co_await file->co_pwrite_zeroes(run.offset, run.bytes, 0);
  if (mode != Preallocation::kFull) co_return Result<void>{};
  uint64_t chunk = std::min<uint64_t>(run.bytes, 1 << 20);
  AlignedBuffer zeroes(chunk);
  std::memset(zeroes.data(), 0, chunk);
  for (uint64_t pos = 0; pos < run.bytes; pos += chunk) {
    uint64_t n = std::min(chunk, run.bytes - pos);
    STRATA_CO_TRY(co_await file->co_pwritev(run.offset + pos, IoVec(zeroes.data(), n), 0));
  }
  co_return Result<void>{};
}

}  // namespace

Task<Result<void>> Qcow2Driver::co_preallocate(uint64_t from, uint64_t to, Preallocation mode) {
  if (mode == Preallocation::kOff || from >= to) co_return Result<void>{};
  if (!writable_) co_return Error{EPERM, "qcow2: image is read-only"};
  uint64_t cs = cluster_size();
  uint64_t first = from / cs;
  uint64_t end = div_round_up(to, cs);
  co_await lock_->co_lock();
  CoMutex::Guard guard(lock_.get());
  co_await co_wait_inflight(first * cs, (end - first) * cs);
  uint64_t per_l2 = uint64_t(1) << l2_bits_;
  // L2 tables first, so that the data clusters of the range come out as
  // contiguous as the free space allows.
  for (uint64_t l1i = first / per_l2; l1i <= (end - 1) / per_l2; l1i++) {
    STRATA_CO_TRY(co_await co_writable_l2(l1i));
  }
  uint64_t host_end = 0;
  for (uint64_t c = first; c < end;) {
    uint64_t l1i = c / per_l2;
    uint64_t stop = std::min(end, (l1i + 1) * per_l2);
    STRATA_CO_TRY_ASSIGN(auto table, co_await co_writable_l2(l1i));
    std::vector<uint64_t> slots;
    for (uint64_t k = c; k < stop; k++) {
      if (l2fmt_.load(table->bytes(), k % per_l2).entry == 0) slots.push_back(k % per_l2);
    }
    uint64_t first_guest = (c - c % per_l2) * cs;
    c = stop;
    if (slots.empty()) continue;
    std::vector<uint64_t> hosts;
    if (external_data()) {
      for (uint64_t slot : slots) {
        hosts.push_back(first_guest + slot * cs);
        HostRun run{hosts.back(), cs};
        STRATA_CO_TRY(co_await co_fill_run(data_file_, run, mode));
      }
    } else {
      STRATA_CO_TRY_ASSIGN(uint64_t host, co_await refcounts_->co_alloc(slots.size()));
      for (size_t i = 0; i < slots.size(); i++) hosts.push_back(host + i * cs);
      STRATA_CO_TRY(co_await co_fill_run(file_, HostRun{host, slots.size() * cs}, mode));
    }
    // The table may have left the cache meanwhile: look it up again.
    STRATA_CO_TRY_ASSIGN(table, co_await co_writable_l2(l1i));
    for (size_t i = 0; i < slots.size(); i++) {
      L2Entry e = l2fmt_.load(table->bytes(), slots[i]);
      e.entry = hosts[i] | kCopied;
      l2fmt_.store(table->bytes(), slots[i], e);
    }
    l2_cache_->mark_dirty(*table);
    host_end = std::max(host_end, hosts.back() + cs);
  }
  STRATA_CO_TRY(co_await co_flush_metadata());
  Child* data = external_data() ? data_file_ : file_;
  if (external_data()) host_end = to;  // the data file covers the guest range
  if (host_end > data->node()->size()) {
    STRATA_CO_TRY(co_await data->co_truncate(host_end, false, Preallocation::kOff));
  }
  co_return co_await data->co_flush();
}

}  // namespace strata::qcow2
