#include "block/drivers/vpc/format.h"

#include <cinttypes>
#include <climits>
#include <cstring>

#include "block/drivers/bytes.h"
#include "block/drivers/probe/probe.h"

namespace strata::vpc {

Result<Footer> parse_footer(std::span<const uint8_t> s) {
  if (s.size() < kFooterBytes || std::memcmp(s.data(), "conectix", 8) != 0) {
    return Error{EINVAL, "invalid VPC image"};
  }
  if (!probe::is_vhd_footer(s)) return Error{EINVAL, "Incorrect header checksum"};
  Footer f;
  f.data_offset = bytes::be64(s.data() + 16);
  f.creator_app.assign(reinterpret_cast<const char*>(s.data() + 28), 4);
  f.current_size = bytes::be64(s.data() + 48);
  f.cylinders = bytes::be16(s.data() + 56);
  f.heads = s[58];
  f.sectors_per_track = s[59];
  f.type = bytes::be32(s.data() + 60);
  return f;
}

Result<SizeCalc> parse_size_calc(const std::string& value) {
  if (value.empty()) return SizeCalc::kAuto;
  if (value == "current_size") return SizeCalc::kCurrentSize;
  if (value == "chs") return SizeCalc::kChs;
  return Error{EINVAL, "Invalid size calculation mode: '" + value + "'"};
}

uint64_t virtual_sectors(const Footer& f, SizeCalc calc) {
  uint64_t chs = uint64_t(f.cylinders) * f.heads * f.sectors_per_track;
  static const char* const kSizeApps[] = {"win ", "qem2", "d2v ", "CTXS"};
  bool size_app = f.creator_app == std::string("tap\0", 4);
  for (const char* app : kSizeApps) size_app |= f.creator_app == app;
  bool use_chs = !size_app || calc == SizeCalc::kChs;
  if (!use_chs || chs == kMaxGeometry || calc == SizeCalc::kCurrentSize) {
    return f.current_size / 512;
  }
  return chs;
}

Result<DynamicHeader> parse_dynamic_header(std::span<const uint8_t> s, uint64_t sectors) {
  if (s.size() < 512 || std::memcmp(s.data(), "cxsparse", 8) != 0) {
    return Error{EINVAL, "Invalid header magic"};
  }
  DynamicHeader h;
  h.table_offset = bytes::be64(s.data() + 16);
  h.max_table_entries = bytes::be32(s.data() + 28);
  h.block_size = bytes::be32(s.data() + 32);
  if (h.block_size < 512 || (h.block_size & (h.block_size - 1))) {
    return Error{EINVAL, "Invalid block size " + std::to_string(h.block_size)};
  }
  h.bitmap_size = ((h.block_size / (8 * 512)) + 511) & ~511u;
  if (sectors * 512 / h.block_size > 0xffffffffull) return Error{EINVAL, "Too many blocks"};
  if (uint64_t(h.max_table_entries) * h.block_size < sectors * 512) {
    return Error{EINVAL, "Page table too small"};
  }
  if (h.max_table_entries > INT_MAX / 4) {
    return Error{EINVAL, "Max Table Entries too large (" +
                             std::to_string(int32_t(h.max_table_entries)) + ")"};
  }
  return h;
}

}  // namespace strata::vpc
