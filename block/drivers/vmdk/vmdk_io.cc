// Reading a VMDK image and its block status.
#include "block/drivers/vmdk/vmdk.h"
#include "block/drivers/zero_status.h"

namespace strata::vmdk {

Extent* VmdkDriver::find_extent(uint64_t offset) {
  uint64_t sector = offset / kSector;
  for (auto& e : extents_) {
    if (sector < e.end_sector()) return &e;
  }
  return nullptr;
}

// QEMU's vmdk_is_cid_valid: the parent must be a vmdk whose CID is ours.
Result<void> VmdkDriver::check_parent_cid() const {
  auto* parent = dynamic_cast<const VmdkDriver*>(&backing_->node()->driver());
  if (!parent || parent->cid() != parent_cid_) {
    return Error{EINVAL, "vmdk: the parent image's CID does not match this image's parentCID"};
  }
  return {};
}

Task<Result<void>> VmdkDriver::co_read_unallocated(uint64_t offset, const IoVec& iov) {
  if (!backing_) {
    iov.fill(0, iov.size(), 0);
    co_return Result<void>{};
  }
  STRATA_CO_TRY(check_parent_cid());
  uint64_t backing_size = backing_->node()->size();
  uint64_t from_backing = offset < backing_size ? std::min(iov.size(), backing_size - offset) : 0;
  if (from_backing) STRATA_CO_TRY(co_await backing_->co_preadv(offset, iov.slice(0, from_backing)));
  iov.fill(from_backing, iov.size() - from_backing, 0);
  co_return Result<void>{};
}

Task<Result<void>> VmdkDriver::co_preadv(uint64_t offset, const IoVec& iov, uint32_t) {
  for (uint64_t done = 0; done < iov.size();) {
    uint64_t at = offset + done;
    Extent* e = find_extent(at);
    if (!e) co_return Error{EIO, "vmdk: no extent holds offset " + std::to_string(at)};
    STRATA_CO_TRY_ASSIGN(Grain g, co_await e->co_lookup(at - e->start_byte()));
    uint64_t n = std::min({iov.size() - done, g.bytes_left, e->end_sector() * kSector - at});
    IoVec part = iov.slice(done, n);
    switch (g.kind) {
      case GrainKind::kUnallocated:
        STRATA_CO_TRY(co_await co_read_unallocated(at, part));
        break;
      case GrainKind::kZeroed:
        part.fill(0, n, 0);
        break;
      case GrainKind::kData:
        STRATA_CO_TRY(e->check_in_file(g));
        STRATA_CO_TRY(co_await e->file()->co_preadv(g.host_offset + g.offset_in_grain, part));
        break;
      case GrainKind::kCompressed:
        STRATA_CO_TRY(e->check_in_file(g));
        STRATA_CO_TRY(co_await e->co_read_compressed(g, part));
        break;
    }
    done += n;
  }
  co_return Result<void>{};
}

Task<Result<BlockStatus>> VmdkDriver::co_block_status(uint64_t offset, uint64_t bytes) {
  Extent* e = find_extent(offset);
  if (!e) co_return Error{EIO, "vmdk: no extent holds offset " + std::to_string(offset)};
  STRATA_CO_TRY_ASSIGN(Grain g, co_await e->co_lookup(offset - e->start_byte()));
  BlockStatus st;
  st.bytes = std::min({bytes, g.bytes_left, e->end_sector() * kSector - offset});
  if (g.kind == GrainKind::kZeroed) st.flags = kStatusZero;
  if (g.kind == GrainKind::kCompressed) st.flags = kStatusData;
  if (g.kind == GrainKind::kData) {
    st.flags = kStatusData | kStatusOffsetValid;
    st.map_node = e->file()->node();
    st.map_offset = g.host_offset + g.offset_in_grain;
    if (e->is_flat()) co_return co_await co_add_file_zero_status(e->file(), st);
  }
  co_return st;
}

}  // namespace strata::vmdk
