#include "block/drivers/vdi/vdi.h"

#include "block/drivers/bytes.h"
#include "block/drivers/read_only.h"
#include "block/drivers/zero_status.h"

namespace strata::vdi {

Task<Result<void>> VdiDriver::co_open(OpenContext& ctx) {
  STRATA_CO_TRY(require_read_only(node(), "vdi"));
  STRATA_CO_TRY_ASSIGN(file_, co_await ctx.co_open_child("file", kRoleImage, true));
  std::vector<uint8_t> sector(kHeaderBytes, 0);
  STRATA_CO_TRY(co_await file_->co_pread(0, sector));
  STRATA_CO_TRY_ASSIGN(header_, parse_header(sector));
  co_return co_await co_load_block_map();
}

Task<Result<void>> VdiDriver::co_load_block_map() {
  uint64_t bytes =
      (uint64_t(header_.blocks_in_image) * 4 + kSectorSize - 1) / kSectorSize * kSectorSize;
  if (header_.offset_bmap + bytes > file_->node()->size()) {
    co_return Error{EINVAL, "VDI block map (" + std::to_string(bytes) + " bytes at offset " +
                                std::to_string(header_.offset_bmap) +
                                ") extends past the end of the file"};
  }
  std::vector<uint8_t> raw(bytes);
  STRATA_CO_TRY(co_await file_->co_pread(header_.offset_bmap, raw));
  bmap_.resize(header_.blocks_in_image);
  for (size_t i = 0; i < bmap_.size(); i++) bmap_[i] = bytes::le32(raw.data() + 4 * i);
  co_return Result<void>{};
}

uint64_t VdiDriver::host_offset(uint32_t entry, uint64_t offset) const {
  return header_.offset_data + uint64_t(entry) * header_.block_size + offset % header_.block_size;
}

Task<Result<void>> VdiDriver::co_preadv(uint64_t offset, const IoVec& iov, uint32_t) {
  for (uint64_t done = 0; done < iov.size();) {
    uint64_t at = offset + done;
    uint64_t n =
        std::min<uint64_t>(iov.size() - done, header_.block_size - at % header_.block_size);
    uint32_t entry = bmap_[at / header_.block_size];
    if (is_allocated(entry)) {
      uint64_t host = host_offset(entry, at);
      if (host - at % header_.block_size >= file_->node()->size()) {
        co_return Error{EIO, "vdi: block " + std::to_string(entry) + " (for guest offset " +
                                 std::to_string(at) + ") lies past the end of the file"};
      }
      STRATA_CO_TRY(co_await file_->co_preadv(host, iov.slice(done, n)));
    } else {
      iov.fill(done, n, 0);
    }
    done += n;
  }
  co_return Result<void>{};
}

Task<Result<BlockStatus>> VdiDriver::co_block_status(uint64_t offset, uint64_t bytes) {
  BlockStatus st;
  st.bytes = std::min<uint64_t>(bytes, header_.block_size - offset % header_.block_size);
  uint32_t entry = bmap_[offset / header_.block_size];
  if (!is_allocated(entry)) {
    st.flags = kStatusZero;
    co_return st;
  }
  st.flags = kStatusData | kStatusOffsetValid;
  st.map_offset = host_offset(entry, offset);
  st.map_node = file_->node();
  if (header_.image_type == kTypeStatic) co_return co_await co_add_file_zero_status(file_, st);
  co_return st;
}

}  // namespace strata::vdi

namespace strata {

void register_vdi_driver(DriverRegistry& registry) {
  registry.add(DriverSpec{"vdi", DriverKind::kFormat, {{"file", OptType::kChild, true}}, [] {
                            return std::make_unique<vdi::VdiDriver>();
                          }});
}

}  // namespace strata
