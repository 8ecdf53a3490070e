// VpcDriver: VHD images (Virtual PC, Hyper-V), fixed and dynamic, read-only.
//
// Contract: a fixed image is its data followed by a footer; a dynamic image
// has a copy of the footer at offset 0, a dynamic disk header and a block
// allocation table (BAT) of blocks, each a sector bitmap then the data
// (QEMU ignores the bitmap on reads, and so does this driver: an allocated
// block is read whole). Unallocated blocks read as zeroes. The virtual size
// follows QEMU's rules (block/drivers/vpc/format.h; option
// force_size_calc). Refused where QEMU would read something else than the
// guest wrote: differencing images (their parent is not opened) and a
// dynamic footer found only at the end of the file. Writes are refused.
// Thread rules: loop-thread only.
#pragma once

#include <vector>

#include "block/core/graph.h"
#include "block/drivers/vpc/format.h"

namespace strata::vpc {

class VpcDriver final : public Driver {
 public:
  Task<Result<void>> co_open(OpenContext& ctx) override;
  Task<Result<void>> co_preadv(uint64_t offset, const IoVec& iov, uint32_t flags) override;
  Task<Result<BlockStatus>> co_block_status(uint64_t offset, uint64_t bytes) override;
  uint64_t size() const override { return sectors_ * 512; }
  uint64_t cluster_size() const override { return fixed() ? 0 : dyn_.block_size; }

 private:
  bool fixed() const { return footer_.type == kTypeFixed; }
  Task<Result<bool>> co_read_footer();
  Task<Result<void>> co_load_bat();
  // File offset of guest byte `offset`, or UINT64_MAX when unallocated.
  uint64_t host_offset(uint64_t offset) const;
  Error open_error(int code) const;

  Child* file_ = nullptr;
  Footer footer_;
  uint64_t sectors_ = 0;
  DynamicHeader dyn_;
  std::vector<uint32_t> bat_;
};

}  // namespace strata::vpc
