// VHD (Virtual PC) on-disk format: the footer, the dynamic disk header, and
// QEMU's rules for the virtual size.
//
// Contract: parse_footer() checks the creator and the checksum (QEMU's
// messages); virtual_sectors() applies QEMU 7.2's size rule: the CHS
// geometry for images from Virtual PC and QEMU ("vpc ", "qemu"), the
// footer's current size for Hyper-V, disk2vhd, XenServer, XenConverter and
// QEMU with force_size ("win ", "d2v ", "tap\0", "CTXS", "qem2") and for
// the maximum geometry; force_size_calc=chs|current_size overrides the
// table (not the maximum geometry rule). parse_dynamic_header() checks what
// QEMU checks before it reads the block allocation table.
// Thread rules: pure values and functions.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "strata/result.h"

namespace strata::vpc {

constexpr uint32_t kFooterBytes = 512;
constexpr uint32_t kTypeFixed = 2;
constexpr uint32_t kTypeDynamic = 3;
constexpr uint32_t kTypeDifferencing = 4;
constexpr uint64_t kMaxGeometry = 65535ull * 16 * 255;
constexpr uint64_t kMaxSectors = 0xff000000;  // 2040 GiB
constexpr uint32_t kUnallocated = 0xffffffff;

struct Footer {
  std::string creator_app;  // 4 bytes
  uint64_t data_offset = 0;
  uint64_t current_size = 0;
  uint16_t cylinders = 0;
  uint8_t heads = 0;
  uint8_t sectors_per_track = 0;
  uint32_t type = 0;
};

enum class SizeCalc { kAuto, kChs, kCurrentSize };

Result<Footer> parse_footer(std::span<const uint8_t> sector);
uint64_t virtual_sectors(const Footer& f, SizeCalc calc);
Result<SizeCalc> parse_size_calc(const std::string& value);

struct DynamicHeader {
  uint64_t table_offset = 0;
  uint32_t max_table_entries = 0;
  uint32_t block_size = 0;
  uint32_t bitmap_size = 0;  // the sector bitmap before each block's data
};

// Checks the header against the image's virtual size in sectors.
Result<DynamicHeader> parse_dynamic_header(std::span<const uint8_t> sector, uint64_t sectors);

}  // namespace strata::vpc
