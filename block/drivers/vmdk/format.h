// VMDK on-disk format: the headers of sparse extents (VMDK4 "KDMV", VMDK3
// "COWD"), the stream-optimized footer, grain markers.
//
// Contract: parse_*() read a header from the bytes of an extent's first
// sector (or the footer's sectors) and refuse hostile values with QEMU's
// messages where QEMU has one, in QEMU's order: version, grain table size,
// grain directory entry size, truncation, granularity, directory size.
// Sizes are in sectors of 512 bytes, as on disk. A SparseHeader is ready for
// an extent: l1_entries, l2_entries, grain_sectors and the offsets of the
// grain directory (bytes) are checked.
// Thread rules: pure values and functions.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "strata/result.h"

namespace strata::vmdk {

constexpr uint32_t kMagicVmdk4 = 0x4B444D56;  // "KDMV", big-endian
constexpr uint32_t kMagicVmdk3 = 0x434F5744;  // "COWD", big-endian
constexpr uint32_t kFlagRedundantGd = 1u << 1;
constexpr uint32_t kFlagZeroGrain = 1u << 2;
constexpr uint32_t kFlagCompressed = 1u << 16;
constexpr uint32_t kFlagMarkers = 1u << 17;
constexpr uint16_t kCompressionDeflate = 1;
constexpr uint64_t kGdAtEnd = 0xffffffffffffffffull;
constexpr uint32_t kGteZeroed = 1;
constexpr uint64_t kSector = 512;
// QEMU's bounds: 1 GiB grains, 32 Mi directory entries, 512 entries a table.
constexpr uint64_t kMaxGrainSectors = 0x200000;
constexpr uint64_t kMaxL1Entries = 32ull << 20;
constexpr uint32_t kMaxL2Entries = 512;
// The stream-optimized footer: a footer marker, the header, an
// end-of-stream marker, one sector each, at the end of the file.
constexpr uint64_t kFooterBytes = 3 * kSector;
constexpr uint32_t kMarkerEndOfStream = 0;
constexpr uint32_t kMarkerFooter = 3;
// A compressed grain starts with its guest sector (8 bytes) and size (4).
constexpr uint64_t kGrainMarkerBytes = 12;

// The fields of a VMDK4 header after the magic number, as on disk.
struct Vmdk4Header {
  uint32_t version = 0;
  uint32_t flags = 0;
  uint64_t capacity = 0;
  uint64_t granularity = 0;
  uint64_t desc_offset = 0;
  uint64_t desc_size = 0;
  uint32_t num_gtes_per_gt = 0;
  uint64_t rgd_offset = 0;
  uint64_t gd_offset = 0;
  uint64_t grain_offset = 0;
  uint16_t compress_algorithm = 0;
};

// `sector`: the 512 bytes starting with the magic number.
Vmdk4Header read_vmdk4_header(std::span<const uint8_t> sector);
// The header a stream-optimized footer holds (QEMU's checks of the markers).
Result<Vmdk4Header> read_stream_footer(std::span<const uint8_t> footer);

// What an extent needs from its header.
struct SparseHeader {
  uint64_t capacity = 0;       // sectors
  uint64_t grain_sectors = 0;  // cluster size in sectors
  uint32_t l2_entries = 0;     // entries per grain table
  uint64_t l1_entries = 0;     // grain directory entries
  uint64_t l1_offset = 0;      // bytes
  uint32_t version = 0;
  bool compressed = false;
  bool markers = false;
  bool zero_grain = false;
};

// A VMDK4 header for an extent of a file of `file_sectors` sectors.
Result<SparseHeader> check_vmdk4(const Vmdk4Header& h, uint64_t file_sectors);
// A VMDK3 (COWD) header: `sector` starts with the magic number.
Result<SparseHeader> parse_vmdk3(std::span<const uint8_t> sector);

}  // namespace strata::vmdk
