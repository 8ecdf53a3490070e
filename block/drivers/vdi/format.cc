#include "block/drivers/vdi/format.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <string>

#include "block/drivers/bytes.h"

namespace strata::vdi {

namespace {

// Field offsets in the header.
constexpr size_t kOffSignature = 0x40;
constexpr size_t kOffVersion = 0x44;
constexpr size_t kOffImageType = 0x4c;
constexpr size_t kOffBmap = 0x154;
constexpr size_t kOffData = 0x158;
constexpr size_t kOffSectorSize = 0x168;
constexpr size_t kOffDiskSize = 0x170;
constexpr size_t kOffBlockSize = 0x178;
constexpr size_t kOffBlocks = 0x180;
constexpr size_t kOffAllocated = 0x184;
constexpr size_t kOffUuidLink = 0x1a8;
constexpr size_t kOffUuidParent = 0x1b8;

bool uuid_is_null(std::span<const uint8_t> s, size_t at) {
  return std::all_of(s.begin() + at, s.begin() + at + 16, [](uint8_t b) { return b == 0; });
}

std::string format(const char* fmt, auto... args) {
  char buf[256];
  std::snprintf(buf, sizeof buf, fmt, args...);
  return buf;
}

Error unsupported(std::string what) {
  return Error{ENOTSUP, "unsupported VDI image (" + what + ")"};
}

}  // namespace

namespace {

// The header fields QEMU checks, as on disk (before rounding the size).
struct Fields {
  Header h;
  uint32_t signature = 0;
  uint32_t version = 0;
  uint32_t sector_size = 0;
  bool link_uuid = false;
  bool parent_uuid = false;
};

Fields decode(std::span<const uint8_t> s) {
  Fields f;
  f.signature = bytes::le32(s.data() + kOffSignature);
  f.version = bytes::le32(s.data() + kOffVersion);
  f.h.image_type = bytes::le32(s.data() + kOffImageType);
  f.h.offset_bmap = bytes::le32(s.data() + kOffBmap);
  f.h.offset_data = bytes::le32(s.data() + kOffData);
  f.sector_size = bytes::le32(s.data() + kOffSectorSize);
  f.h.disk_size = bytes::le64(s.data() + kOffDiskSize);
  f.h.block_size = bytes::le32(s.data() + kOffBlockSize);
  f.h.blocks_in_image = bytes::le32(s.data() + kOffBlocks);
  f.h.blocks_allocated = bytes::le32(s.data() + kOffAllocated);
  f.link_uuid = !uuid_is_null(s, kOffUuidLink);
  f.parent_uuid = !uuid_is_null(s, kOffUuidParent);
  return f;
}

// QEMU's vdi_open checks after the size limit, in its order.
Result<void> check(const Fields& f) {
  const Header& h = f.h;
  uint64_t room = uint64_t(h.blocks_in_image) * h.block_size;
  if (f.signature != kSignature) {
    return Error{EINVAL,
                 format("Image not in VDI format (bad signature %08" PRIx32 ")", f.signature)};
  }
  if (f.version != kVersion) {
    return unsupported(format("version %" PRIu32 ".%" PRIu32, f.version >> 16, f.version & 0xffff));
  }
  if (h.offset_bmap % kSectorSize) {
    return unsupported(format("unaligned block map offset 0x%" PRIx32, h.offset_bmap));
  }
  if (h.offset_data % kSectorSize) {
    return unsupported(format("unaligned data offset 0x%" PRIx32, h.offset_data));
  }
  if (f.sector_size != kSectorSize) {
    return unsupported(format("sector size %" PRIu32 " is not %u", f.sector_size, kSectorSize));
  }
  if (h.block_size != kBlockSize) {
    return unsupported(format("block size %" PRIu32 " is not %" PRIu32, h.block_size, kBlockSize));
  }
  if (h.disk_size > room) {
    return unsupported(
        format("disk size %" PRIu64 ", image bitmap has room for %" PRIu64, h.disk_size, room));
  }
  if (f.link_uuid) return unsupported("non-NULL link UUID");
  if (f.parent_uuid) return unsupported("non-NULL parent UUID");
  if (h.blocks_in_image > kMaxBlocks) {
    return unsupported(
        format("too many blocks %" PRIu32 ", max is %" PRIu32, h.blocks_in_image, kMaxBlocks));
  }
  return {};
}

}  // namespace

Result<Header> parse_header(std::span<const uint8_t> s) {
  if (s.size() < kHeaderBytes) return Error{EINVAL, "VDI header too short"};
  Fields f = decode(s);
  if (f.h.disk_size > kMaxDiskSize) {
    return Error{ENOTSUP, format("Unsupported VDI image size (size is 0x%" PRIx64
                                 ", max supported is 0x%" PRIx64 ")",
                                 f.h.disk_size, kMaxDiskSize)};
  }
  // Odd sizes (VBoxManage convertfromraw) round up, before the room check.
  f.h.disk_size = (f.h.disk_size + kSectorSize - 1) / kSectorSize * kSectorSize;
  STRATA_TRY(check(f));
  return f.h;
}

}  // namespace strata::vdi
