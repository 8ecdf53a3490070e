// qcow2: reading guest data, and compressed writes (qcow2_write.cc has the
// other writes).
#include <algorithm>
#include <cstring>

#include "block/drivers/qcow2/compress.h"
#include "block/drivers/qcow2/qcow2.h"

namespace strata::qcow2 {

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
  CompressedExtent c = l2fmt_.compressed_extent(entry);
  AlignedBuffer in(c.bytes);
  STRATA_CO_TRY(co_await file_->co_preadv(c.offset, in.iov(), 0));
  AlignedBuffer out(cluster_size());
  if (auto r = decompress_cluster(header_.compression_type, in.span(), out.span()); !r) co_return r;
  iov.copy_from(0, out.data() + in_cluster, iov.size());
  co_return Result<void>{};
}

Task<Result<void>> Qcow2Driver::co_read_run(uint64_t offset, const Mapping& m, const IoVec& iov) {
  switch (m.type) {
    case ClusterType::kUnallocated:
    case ClusterType::kUnallocatedAlloc:
      co_return co_await co_read_backing(offset, iov);
    case ClusterType::kZeroPlain:
    case ClusterType::kZeroAlloc:
      iov.fill(0, iov.size(), 0);
      co_return Result<void>{};
    case ClusterType::kNormal:
      if (!data_file_) co_return Error{EIO, "qcow2: the data file is not open"};
      co_return co_await data_file_->co_preadv(m.host_offset, iov, 0);
    case ClusterType::kCompressed:
      co_return co_await co_read_compressed(m.entry, offset & (cluster_size() - 1), iov);
    case ClusterType::kInvalid:
      break;
  }
  co_return Error{EIO, "qcow2: invalid cluster entry"};
}

Task<Result<void>> Qcow2Driver::co_read_guest(uint64_t offset, const IoVec& iov) {
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

Task<Result<void>> Qcow2Driver::co_preadv(uint64_t offset, const IoVec& iov, uint32_t) {
  co_return co_await co_read_guest(offset, iov);
}

// Compressed write of whole clusters (the last one may be partial): each is
// deflated on the thread pool and packed into shared host clusters; a
// cluster that does not shrink, or that is already allocated, is written
// normally.
Task<Result<void>> Qcow2Driver::co_write_compressed(uint64_t offset, const IoVec& iov) {
  uint64_t cs = cluster_size();
  if (external_data()) {
    co_return Error{ENOTSUP, "Compression is not supported with an external data file"};
  }
  if (offset % cs || (iov.size() % cs && offset + iov.size() != header_.size)) {
    co_return Error{EINVAL, "Compressed writes must be cluster aligned"};
  }
  uint8_t type = header_.compression_type;
  AlignedBuffer in(cs), out(cs);
  for (uint64_t pos = 0; pos < iov.size(); pos += cs) {
    uint64_t len = std::min(cs, iov.size() - pos);
    std::memset(in.data(), 0, cs);
    iov.copy_to(pos, in.data(), len);
    size_t packed = co_await loop_->offload([&in, &out, cs, type] {
      return compress_cluster(type, {in.data(), cs}, {out.data(), cs - 1});
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
  L2Entry old = l2fmt_.load(table->bytes(), l2_index(offset));
  // As QEMU, only where nothing is allocated (zero subclusters included).
  if (l2fmt_.allocated(old.entry)) co_return false;
  table.reset();
  STRATA_CO_TRY_ASSIGN(uint64_t host, co_await refcounts_->co_alloc_bytes(len));
  auto r = co_await file_->co_pwrite(host, {data, len});
  if (!r) {
    uint64_t first = host / cluster_size();
    refcounts_->free_later(first * cluster_size(), (host + len - 1) / cluster_size() - first + 1);
    co_return std::move(r).error();
  }
  STRATA_CO_TRY_ASSIGN(table, co_await co_writable_l2(l1_index(offset)));
  l2fmt_.store(table->bytes(), l2_index(offset), {l2fmt_.compressed_entry(host, len), 0});
  l2_cache_->mark_dirty(*table);
  co_return true;
}

Task<Result<void>> Qcow2Driver::co_pwritev(uint64_t offset, const IoVec& iov, uint32_t flags) {
  if (corrupt_) co_return Error{EIO, "qcow2: image is corrupt"};
  if (!data_file_) co_return Error{EIO, "qcow2: the data file is not open"};
  if (flags & kReqWriteCompressed) co_return co_await co_write_compressed(offset, iov);
  for (uint64_t pos = 0; pos < iov.size();) {
    STRATA_CO_TRY_ASSIGN(uint64_t n,
                         co_await co_write_step(offset + pos, iov.slice(pos, iov.size() - pos)));
    pos += n;
  }
  co_return Result<void>{};
}

}  // namespace strata::qcow2
