#include "block/drivers/vpc/vpc.h"

#include <cstring>

#include "block/drivers/bytes.h"
#include "block/drivers/read_only.h"
#include "block/drivers/zero_status.h"

namespace strata::vpc {

Error VpcDriver::open_error(int code) const {
  std::string name = file_->node()->driver().filename();
  return Error{code, "Could not open '" + name + "': " + std::strerror(code)};
}

// Reads the footer: a copy at offset 0 (dynamic), else the last sector
// (fixed). Returns whether it came from the end of the file.
Task<Result<bool>> VpcDriver::co_read_footer() {
  std::vector<uint8_t> sector(kFooterBytes, 0);
  auto r = co_await file_->co_pread(0, sector);
  if (!r) co_return Error{r.error().code, "Unable to read VHD header"};
  bool at_end = std::memcmp(sector.data(), "conectix", 8) != 0;
  if (at_end) {
    uint64_t size = file_->node()->size();
    if (size < kFooterBytes) co_return Error{EINVAL, "File too small for a VHD header"};
    STRATA_CO_TRY(co_await file_->co_pread(size - kFooterBytes, sector));
  }
  STRATA_CO_TRY_ASSIGN(footer_, parse_footer(sector));
  co_return at_end;
}

Task<Result<void>> VpcDriver::co_open(OpenContext& ctx) {
  STRATA_CO_TRY(require_read_only(node(), "vpc"));
  STRATA_CO_TRY_ASSIGN(SizeCalc calc,
                       parse_size_calc(opt_string(ctx.options(), "force_size_calc")));
  STRATA_CO_TRY_ASSIGN(file_, co_await ctx.co_open_child("file", kRoleImage, true));
  STRATA_CO_TRY_ASSIGN(bool at_end, co_await co_read_footer());
  sectors_ = virtual_sectors(footer_, calc);
  if (sectors_ > kMaxSectors) co_return open_error(EFBIG);
  if (footer_.type == kTypeDifferencing) {
    co_return Error{ENOTSUP, "Differencing VHD images are not supported by Strata"};
  }
  if (at_end && !fixed()) {
    co_return Error{EINVAL, "VHD footer of a dynamic image found only at the end of the file"};
  }
  if (at_end) co_return Result<void>{};
  std::vector<uint8_t> sector(512, 0);
  auto r = co_await file_->co_pread(footer_.data_offset, sector);
  if (!r) co_return Error{r.error().code, "Error reading dynamic VHD header"};
  STRATA_CO_TRY_ASSIGN(dyn_, parse_dynamic_header(sector, sectors_));
  co_return co_await co_load_bat();
}

Task<Result<void>> VpcDriver::co_load_bat() {
  uint64_t bytes = uint64_t(dyn_.max_table_entries) * 4;
  uint64_t file_size = file_->node()->size();
  auto truncated = Error{EINVAL,
                         "block-vpc: free_data_block_offset points after the end of file. The "
                         "image has been truncated."};
  if (dyn_.table_offset > file_size || bytes > file_size - dyn_.table_offset) co_return truncated;
  std::vector<uint8_t> raw(bytes);
  auto r = co_await file_->co_pread(dyn_.table_offset, raw);
  if (!r) co_return Error{r.error().code, "Error reading pagetable"};
  bat_.resize(dyn_.max_table_entries);
  uint64_t free_offset = (dyn_.table_offset + bytes + 511) / 512 * 512;
  for (size_t i = 0; i < bat_.size(); i++) {
    bat_[i] = bytes::be32(raw.data() + 4 * i);
    if (bat_[i] == kUnallocated) continue;
    free_offset =
        std::max(free_offset, 512 * uint64_t(bat_[i]) + dyn_.bitmap_size + dyn_.block_size);
  }
  if (free_offset > file_size) co_return truncated;
  co_return Result<void>{};
}

uint64_t VpcDriver::host_offset(uint64_t offset) const {
  uint64_t index = offset / dyn_.block_size;
  if (index >= bat_.size() || bat_[index] == kUnallocated) return UINT64_MAX;
  return 512 * uint64_t(bat_[index]) + dyn_.bitmap_size + offset % dyn_.block_size;
}

Task<Result<void>> VpcDriver::co_preadv(uint64_t offset, const IoVec& iov, uint32_t) {
  if (fixed()) co_return co_await file_->co_preadv(offset, iov);
  for (uint64_t done = 0; done < iov.size();) {
    uint64_t at = offset + done;
    uint64_t n = std::min<uint64_t>(iov.size() - done, dyn_.block_size - at % dyn_.block_size);
    uint64_t host = host_offset(at);
    if (host == UINT64_MAX) {
      iov.fill(done, n, 0);
    } else {
      STRATA_CO_TRY(co_await file_->co_preadv(host, iov.slice(done, n)));
    }
    done += n;
  }
  co_return Result<void>{};
}

Task<Result<BlockStatus>> VpcDriver::co_block_status(uint64_t offset, uint64_t bytes) {
  BlockStatus st;
  st.map_node = file_->node();
  if (fixed()) {
    st.flags = kStatusData | kStatusOffsetValid;
    st.bytes = bytes;
    st.map_offset = offset;
    co_return co_await co_add_file_zero_status(file_, st);
  }
  uint64_t host = host_offset(offset);
  uint64_t n = std::min<uint64_t>(bytes, dyn_.block_size - offset % dyn_.block_size);
  if (host != UINT64_MAX) {
    st.flags = kStatusData | kStatusOffsetValid;
    st.bytes = n;
    st.map_offset = host;
    co_return st;
  }
  // Unallocated blocks in a row are one extent.
  while (n < bytes && host_offset(offset + n) == UINT64_MAX) {
    n += std::min<uint64_t>(bytes - n, dyn_.block_size);
  }
  st.flags = kStatusZero;
  st.bytes = n;
  st.map_node = nullptr;
  co_return st;
}

}  // namespace strata::vpc

namespace strata {

void register_vpc_driver(DriverRegistry& registry) {
  registry.add(DriverSpec{"vpc",
                          DriverKind::kFormat,
                          {{"file", OptType::kChild, true}, {"force_size_calc", OptType::kString}},
                          [] { return std::make_unique<vpc::VpcDriver>(); }});
}

}  // namespace strata
