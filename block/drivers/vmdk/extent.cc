#include "block/drivers/vmdk/extent.h"

#include <zlib.h>

#include "block/drivers/bytes.h"

namespace strata::vmdk {

Extent Extent::flat(Child* file, std::string type, uint64_t sectors, uint64_t start) {
  Extent e;
  e.file_ = file;
  e.type_ = std::move(type);
  e.flat_ = true;
  e.sectors_ = sectors;
  e.grain_sectors_ = sectors;
  e.flat_start_ = start;
  return e;
}

Extent Extent::sparse(Child* file, std::string type, const SparseHeader& h,
                      std::vector<uint32_t> l1) {
  Extent e;
  e.file_ = file;
  e.type_ = std::move(type);
  e.compressed_ = h.compressed;
  e.markers_ = h.markers;
  e.zero_grain_ = h.zero_grain;
  e.sectors_ = h.capacity;
  e.grain_sectors_ = h.grain_sectors;
  e.l2_entries_ = h.l2_entries;
  e.l1_ = std::move(l1);
  return e;
}

std::string Extent::file_name() const {
  return file_->node()->driver().filename();
}

Task<Result<Extent::Table>> Extent::co_table(uint32_t l2_sector) {
  for (auto it = tables_.begin(); it != tables_.end(); ++it) {
    if (it->first != l2_sector) continue;
    tables_.splice(tables_.begin(), tables_, it);
    co_return it->second;
  }
  uint64_t offset = uint64_t(l2_sector) * kSector;
  uint64_t bytes = uint64_t(l2_entries_) * 4;
  if (offset + bytes > file_->node()->size()) {
    co_return Error{EIO, "vmdk: grain table at offset " + std::to_string(offset) + " of '" +
                             file_name() + "' lies past the end of the file"};
  }
  std::vector<uint8_t> raw(bytes);
  STRATA_CO_TRY(co_await file_->co_pread(offset, raw));
  auto table = std::make_shared<std::vector<uint32_t>>(l2_entries_);
  for (size_t i = 0; i < table->size(); i++) (*table)[i] = bytes::le32(raw.data() + 4 * i);
  // Another lookup may have loaded it meanwhile: keep one copy.
  for (const auto& [sector, t] : tables_) {
    if (sector == l2_sector) co_return t;
  }
  tables_.emplace_front(l2_sector, table);
  if (tables_.size() > kCachedTables) tables_.pop_back();
  co_return Table(table);
}

Task<Result<Grain>> Extent::co_lookup(uint64_t offset_in_extent) {
  Grain g;
  if (flat_) {
    g.kind = GrainKind::kData;
    g.host_offset = flat_start_;
    g.offset_in_grain = offset_in_extent;
    g.bytes_left = sectors_ * kSector - offset_in_extent;
    co_return g;
  }
  uint64_t sector = offset_in_extent / kSector;
  g.offset_in_grain = offset_in_extent % grain_bytes();
  g.bytes_left = grain_bytes() - g.offset_in_grain;
  uint64_t l1_index = sector / (uint64_t(l2_entries_) * grain_sectors_);
  if (l1_index >= l1_.size()) {
    co_return Error{EIO, "vmdk: sector " + std::to_string(sector) + " of '" + file_name() +
                             "' is beyond its grain directory"};
  }
  if (l1_[l1_index] == 0) {
    // The whole grain table's range is unallocated.
    uint64_t table_bytes = uint64_t(l2_entries_) * grain_bytes();
    g.bytes_left = table_bytes - offset_in_extent % table_bytes;
    co_return g;
  }
  STRATA_CO_TRY_ASSIGN(Table table, co_await co_table(l1_[l1_index]));
  uint32_t entry = (*table)[(sector / grain_sectors_) % l2_entries_];
  if (zero_grain_ && entry == kGteZeroed) {
    g.kind = GrainKind::kZeroed;
    co_return g;
  }
  if (entry == 0) co_return g;
  g.host_offset = uint64_t(entry) * kSector;
  g.kind = compressed_ ? GrainKind::kCompressed : GrainKind::kData;
  co_return g;
}

Result<void> Extent::check_in_file(const Grain& g) const {
  if (g.host_offset < file_->node()->size()) return {};
  return Error{EIO, "vmdk: grain at offset " + std::to_string(g.host_offset) + " of '" +
                        file_name() + "' lies past the end of the file"};
}

Task<Result<void>> Extent::co_read_compressed(const Grain& g, const IoVec& iov) {
  auto bad = [&](const std::string& why) {
    return Error{EIO, "vmdk: compressed grain at offset " + std::to_string(g.host_offset) +
                          " of '" + file_name() + "' " + why};
  };
  uint64_t avail = std::min(2 * grain_bytes(), file_->node()->size() - g.host_offset);
  std::vector<uint8_t> in(avail);
  STRATA_CO_TRY(co_await file_->co_pread(g.host_offset, in));
  const uint8_t* data = in.data();
  uint64_t len = grain_bytes();
  if (markers_) {
    if (avail < kGrainMarkerBytes) co_return bad("is truncated");
    len = bytes::le32(in.data() + 8);
    data += kGrainMarkerBytes;
    avail -= kGrainMarkerBytes;
  }
  if (len == 0 || len > avail) co_return bad("has an invalid size (" + std::to_string(len) + ")");
  std::vector<uint8_t> out(grain_bytes());
  uLongf out_len = out.size();
  if (uncompress(out.data(), &out_len, data, uLong(len)) != Z_OK) co_return bad("is corrupt");
  if (g.offset_in_grain + iov.size() > out_len) co_return bad("is shorter than the grain");
  iov.copy_from(0, out.data() + g.offset_in_grain, iov.size());
  co_return Result<void>{};
}

}  // namespace strata::vmdk
