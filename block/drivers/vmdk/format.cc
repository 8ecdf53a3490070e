#include "block/drivers/vmdk/format.h"

#include <cinttypes>
#include <cstdio>

#include "block/drivers/bytes.h"

namespace strata::vmdk {

namespace {

// Checks shared by both header kinds (QEMU's vmdk_add_extent).
Result<void> check_tables(const SparseHeader& h) {
  if (h.grain_sectors > kMaxGrainSectors) {
    return Error{EFBIG, "Invalid granularity, image may be corrupt"};
  }
  if (h.l1_entries > kMaxL1Entries) return Error{EFBIG, "L1 size too big"};
  // Beyond QEMU: the virtual size must fit a byte offset the block layer
  // can address.
  if (h.capacity > (uint64_t(1) << 52)) {
    return Error{EFBIG, "VMDK extent too large (" + std::to_string(h.capacity) + " sectors)"};
  }
  return {};
}

}  // namespace

Vmdk4Header read_vmdk4_header(std::span<const uint8_t> s) {
  const uint8_t* p = s.data() + 4;
  Vmdk4Header h;
  h.version = bytes::le32(p);
  h.flags = bytes::le32(p + 4);
  h.capacity = bytes::le64(p + 8);
  h.granularity = bytes::le64(p + 16);
  h.desc_offset = bytes::le64(p + 24);
  h.desc_size = bytes::le64(p + 32);
  h.num_gtes_per_gt = bytes::le32(p + 40);
  h.rgd_offset = bytes::le64(p + 44);
  h.gd_offset = bytes::le64(p + 52);
  h.grain_offset = bytes::le64(p + 60);
  h.compress_algorithm = bytes::le16(p + 73);
  return h;
}

Result<Vmdk4Header> read_stream_footer(std::span<const uint8_t> f) {
  const uint8_t* footer_marker = f.data();
  const uint8_t* header = f.data() + kSector;
  const uint8_t* eos_marker = f.data() + 2 * kSector;
  if (bytes::be32(header) != kMagicVmdk4 || bytes::le32(footer_marker + 8) != 0 ||
      bytes::le32(footer_marker + 12) != kMarkerFooter || bytes::le64(eos_marker) != 0 ||
      bytes::le32(eos_marker + 8) != 0 || bytes::le32(eos_marker + 12) != kMarkerEndOfStream) {
    return Error{EINVAL, "Invalid footer"};
  }
  return read_vmdk4_header(f.subspan(kSector, kSector));
}

Result<SparseHeader> check_vmdk4(const Vmdk4Header& h, uint64_t file_sectors) {
  SparseHeader out;
  out.compressed = h.compress_algorithm == kCompressionDeflate;
  if (h.version > 3) return Error{ENOTSUP, "Unsupported VMDK version " + std::to_string(h.version)};
  if (h.num_gtes_per_gt > kMaxL2Entries) return Error{EINVAL, "L2 table size too big"};
  // QEMU keeps this product in 32 bits.
  uint32_t l1_entry_sectors = uint32_t(h.num_gtes_per_gt * h.granularity);
  if (l1_entry_sectors == 0) return Error{EINVAL, "L1 entry size is invalid"};
  if (file_sectors < h.grain_offset) {
    char msg[96];
    std::snprintf(msg, sizeof msg, "File truncated, expecting at least %" PRId64 " bytes",
                  int64_t(h.grain_offset * kSector));
    return Error{EINVAL, msg};
  }
  out.capacity = h.capacity;
  out.grain_sectors = h.granularity;
  out.l2_entries = h.num_gtes_per_gt;
  out.l1_entries = h.capacity / l1_entry_sectors + (h.capacity % l1_entry_sectors != 0);
  out.l1_offset = h.gd_offset << 9;
  out.version = h.version;
  out.markers = h.flags & kFlagMarkers;
  out.zero_grain = h.flags & kFlagZeroGrain;
  STRATA_TRY(check_tables(out));
  return out;
}

Result<SparseHeader> parse_vmdk3(std::span<const uint8_t> s) {
  const uint8_t* p = s.data() + 4;
  SparseHeader out;
  out.version = bytes::le32(p);
  out.capacity = bytes::le32(p + 8);
  out.grain_sectors = bytes::le32(p + 12);
  out.l1_offset = uint64_t(bytes::le32(p + 16)) << 9;
  out.l1_entries = bytes::le32(p + 20);
  out.l2_entries = 4096;
  STRATA_TRY(check_tables(out));
  if (out.grain_sectors == 0) return Error{EINVAL, "L1 entry size is invalid"};
  return out;
}

}  // namespace strata::vmdk
