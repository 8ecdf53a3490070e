// VDI (VirtualBox) on-disk format: the header and its validation.
//
// Contract: parse_header() reads the 512-byte header and refuses what QEMU
// 7.2 refuses, with QEMU's messages, in QEMU's order (size limit, signature,
// version, alignment of the block map and data, sector and block size,
// room in the block map, link and parent UUIDs, block count). The disk size
// is rounded up to a multiple of 512, as QEMU does for images from
// VBoxManage convertfromraw.
// Thread rules: pure values and functions.
#pragma once

#include <cstdint>
#include <span>

#include "strata/result.h"

namespace strata::vdi {

constexpr uint32_t kSignature = 0xbeda107f;
constexpr uint32_t kVersion = 0x00010001;
constexpr uint32_t kTypeDynamic = 1;
constexpr uint32_t kTypeStatic = 2;
constexpr uint32_t kHeaderBytes = 512;
constexpr uint32_t kSectorSize = 512;
constexpr uint32_t kBlockSize = 1 << 20;
// Block map entries: below kDiscarded, the index of a data block.
constexpr uint32_t kUnallocated = 0xffffffff;
constexpr uint32_t kDiscarded = 0xfffffffe;
// QEMU's limits: the block map must stay below 2 GiB.
constexpr uint32_t kMaxBlocks = (0x80000000u - kSectorSize) / 4;
constexpr uint64_t kMaxDiskSize = uint64_t(kMaxBlocks) * kBlockSize;

struct Header {
  uint32_t image_type = 0;
  uint32_t offset_bmap = 0;
  uint32_t offset_data = 0;
  uint64_t disk_size = 0;  // rounded up to kSectorSize
  uint32_t block_size = 0;
  uint32_t blocks_in_image = 0;
  uint32_t blocks_allocated = 0;
};

Result<Header> parse_header(std::span<const uint8_t> sector);

inline bool is_allocated(uint32_t entry) {
  return entry < kDiscarded;
}

}  // namespace strata::vdi
