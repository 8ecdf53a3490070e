// VdiDriver: VirtualBox VDI images (dynamic and static), read-only.
//
// Contract: the image is 1 MiB blocks mapped by a block map of 32-bit
// entries; unallocated and discarded blocks read as zeroes. The block map
// is read whole at open and must lie inside the file (QEMU would read zeroes
// past the end, which map every block to the first one), and reading a
// block that starts past the end of the file fails (QEMU reads zeroes).
// Block status
// reports data with its offset in the file (static images recurse into the
// file, as QEMU), zeroes for unallocated blocks. Writes are refused: the node
// is read-only (block/drivers/read_only.h).
// Thread rules: loop-thread only.
#pragma once

#include <vector>

#include "block/core/graph.h"
#include "block/drivers/vdi/format.h"

namespace strata::vdi {

class VdiDriver final : public Driver {
 public:
  Task<Result<void>> co_open(OpenContext& ctx) override;
  Task<Result<void>> co_preadv(uint64_t offset, const IoVec& iov, uint32_t flags) override;
  Task<Result<BlockStatus>> co_block_status(uint64_t offset, uint64_t bytes) override;
  uint64_t size() const override { return header_.disk_size; }
  uint64_t cluster_size() const override { return header_.block_size; }

  const Header& header() const { return header_; }
  const std::vector<uint32_t>& block_map() const { return bmap_; }

 private:
  Task<Result<void>> co_load_block_map();
  // The file offset of guest byte `offset` in the block of map entry `entry`.
  uint64_t host_offset(uint32_t entry, uint64_t offset) const;

  Child* file_ = nullptr;
  Header header_;
  std::vector<uint32_t> bmap_;
};

}  // namespace strata::vdi
