// The qcow2 bitmaps extension on disk; see bitmap_format.h.
#include "block/drivers/qcow2/bitmap_format.h"

#include <cerrno>
#include <set>

namespace strata::qcow2 {

namespace {

constexpr size_t kDirEntryFixedSize = 24;

uint16_t get_be16(const uint8_t* p) {
  return uint16_t(p[0] << 8 | p[1]);
}
uint32_t get_be32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}
uint64_t get_be64(const uint8_t* p) {
  return uint64_t(get_be32(p)) << 32 | get_be32(p + 4);
}
void put_be16(uint8_t* p, uint16_t v) {
  p[0] = uint8_t(v >> 8);
  p[1] = uint8_t(v);
}
void put_be32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = uint8_t(v >> (24 - 8 * i));
}
void put_be64(uint8_t* p, uint64_t v) {
  put_be32(p, uint32_t(v >> 32));
  put_be32(p + 4, uint32_t(v));
}

uint64_t align8(uint64_t v) {
  return (v + 7) & ~uint64_t{7};
}

// QEMU's check_dir_entry.
bool entry_satisfies_constraints(const BitmapDirEntry& e, uint64_t cluster_size,
                                 uint64_t disk_size) {
  bool fail = e.table_size == 0 || e.table_offset == 0 || e.table_offset % cluster_size != 0 ||
              e.table_size > kMaxBitmapTableSize ||
              e.granularity_bits > kMaxBitmapGranularityBits ||
              e.granularity_bits < kMinBitmapGranularityBits ||
              (e.flags & ~(kBitmapFlagInUse | kBitmapFlagAuto)) != 0 || e.name.size() > 1023 ||
              e.type != kBitmapTypeDirtyTracking;
  if (fail) return false;
  uint64_t phys_bytes = uint64_t{e.table_size} * cluster_size;
  if (phys_bytes > kMaxBitmapPhysSize) return false;
  // A bitmap that is not in use must cover the whole disk.
  if (!e.in_use() && disk_size > ((phys_bytes * 8) << e.granularity_bits)) return false;
  return true;
}

}  // namespace

Result<BitmapsExtension> parse_bitmaps_extension(std::span<const uint8_t> data,
                                                 uint64_t cluster_size) {
  if (data.size() != 24) return Error{EINVAL, "bitmaps_ext: Invalid extension length"};
  if (get_be32(data.data() + 4) != 0) {
    return Error{EINVAL, "bitmaps_ext: Reserved field is not zero"};
  }
  BitmapsExtension ext;
  ext.nb_bitmaps = get_be32(data.data());
  ext.directory_size = get_be64(data.data() + 8);
  ext.directory_offset = get_be64(data.data() + 16);
  if (ext.nb_bitmaps > kMaxBitmaps) {
    return Error{EINVAL, "bitmaps_ext: Image has " + std::to_string(ext.nb_bitmaps) +
                             " bitmaps, exceeding the QEMU supported maximum of 65535"};
  }
  if (ext.nb_bitmaps == 0) return Error{EINVAL, "found bitmaps extension with zero bitmaps"};
  if (ext.directory_offset % cluster_size != 0) {
    return Error{EINVAL, "bitmaps_ext: invalid bitmap directory offset"};
  }
  if (ext.directory_size > kMaxBitmapDirectorySize) {
    return Error{EINVAL, "bitmaps_ext: bitmap directory size (" +
                             std::to_string(ext.directory_size) +
                             ") exceeds the maximum supported size (67108864)"};
  }
  return ext;
}

std::vector<uint8_t> encode_bitmaps_extension(const BitmapsExtension& ext) {
  std::vector<uint8_t> out(24, 0);
  put_be32(out.data(), ext.nb_bitmaps);
  put_be64(out.data() + 8, ext.directory_size);
  put_be64(out.data() + 16, ext.directory_offset);
  return out;
}

Result<std::vector<BitmapDirEntry>> parse_bitmap_directory(std::span<const uint8_t> dir,
                                                           uint32_t nb_bitmaps,
                                                           uint64_t cluster_size,
                                                           uint64_t disk_size) {
  const Error broken{EINVAL, "Broken bitmap directory"};
  if (dir.empty()) return Error{EINVAL, "Requested bitmap directory size is zero"};
  std::vector<BitmapDirEntry> entries;
  std::set<std::string> names;
  uint64_t pos = 0;
  while (pos < dir.size()) {
    if (dir.size() - pos < kDirEntryFixedSize) return broken;
    const uint8_t* p = dir.data() + pos;
    if (entries.size() == nb_bitmaps) {
      return Error{EINVAL, "More bitmaps found than specified in header extension"};
    }
    BitmapDirEntry e;
    e.table_offset = get_be64(p);
    e.table_size = get_be32(p + 8);
    e.flags = get_be32(p + 12);
    e.type = p[16];
    e.granularity_bits = p[17];
    uint16_t name_size = get_be16(p + 18);
    uint32_t extra_size = get_be32(p + 20);
    uint64_t entry_size = align8(kDirEntryFixedSize + uint64_t{extra_size} + name_size);
    if (entry_size > dir.size() - pos) return broken;
    if (extra_size != 0) return Error{ENOTSUP, "Bitmap extra data is not supported"};
    e.name.assign(reinterpret_cast<const char*>(p + kDirEntryFixedSize), name_size);
    if (name_size == 0 || !entry_satisfies_constraints(e, cluster_size, disk_size)) {
      return Error{EINVAL, "Bitmap '" + e.name + "' doesn't satisfy the constraints"};
    }
    if (!names.insert(e.name).second) return broken;
    entries.push_back(std::move(e));
    pos += entry_size;
  }
  if (entries.size() != nb_bitmaps) {
    return Error{EINVAL, "Less bitmaps found than specified in header extension"};
  }
  return entries;
}

std::vector<uint8_t> encode_bitmap_directory(const std::vector<BitmapDirEntry>& entries) {
  std::vector<uint8_t> out;
  for (const BitmapDirEntry& e : entries) {
    size_t start = out.size();
    out.resize(start + align8(kDirEntryFixedSize + e.name.size()), 0);
    uint8_t* p = out.data() + start;
    put_be64(p, e.table_offset);
    put_be32(p + 8, e.table_size);
    put_be32(p + 12, e.flags);
    p[16] = e.type;
    p[17] = e.granularity_bits;
    put_be16(p + 18, static_cast<uint16_t>(e.name.size()));
    put_be32(p + 20, 0);
    std::copy(e.name.begin(), e.name.end(), p + kDirEntryFixedSize);
  }
  return out;
}

uint64_t bitmap_table_entries(uint64_t disk_size, uint32_t granularity_bits,
                              uint64_t cluster_size) {
  uint64_t granule = uint64_t{1} << granularity_bits;
  uint64_t bits = disk_size / granule + (disk_size % granule != 0);
  uint64_t bits_per_cluster = cluster_size * 8;
  return (bits + bits_per_cluster - 1) / bits_per_cluster;
}

Result<std::vector<uint64_t>> parse_bitmap_table(std::span<const uint8_t> data, uint32_t entries,
                                                 uint64_t cluster_size, const std::string& name) {
  Error bad{EINVAL, "Could not read bitmap_table table from image for bitmap '" + name + "'"};
  if (data.size() < uint64_t{entries} * 8) return bad;
  std::vector<uint64_t> table(entries);
  for (uint32_t i = 0; i < entries; i++) {
    uint64_t entry = get_be64(data.data() + 8 * uint64_t{i});
    uint64_t offset = entry & kBitmapTableOffsetMask;
    // QEMU's check_table_entry.
    if (entry & kBitmapTableReservedMask) return bad;
    if (offset != 0 && ((entry & kBitmapTableAllOnes) || offset % cluster_size != 0)) return bad;
    table[i] = entry;
  }
  return table;
}

std::vector<uint8_t> encode_bitmap_table(const std::vector<uint64_t>& table) {
  std::vector<uint8_t> out(table.size() * 8);
  for (size_t i = 0; i < table.size(); i++) put_be64(out.data() + 8 * i, table[i]);
  return out;
}

Task<Result<HBitmap>> co_load_bitmap(const BitmapDirEntry& entry, uint64_t disk_size,
                                     uint64_t cluster_size, ClusterReader read) {
  uint64_t table_bytes = uint64_t{entry.table_size} * 8;
  std::vector<uint8_t> raw(table_bytes);
  auto r = co_await read(entry.table_offset, raw);
  if (!r) {
    co_return Error{r.error().code,
                    "Could not read bitmap_table table from image for bitmap '" + entry.name + "'"};
  }
  auto table = parse_bitmap_table(raw, entry.table_size, cluster_size, entry.name);
  if (!table) co_return std::move(table).error();
  HBitmap bits(disk_size, entry.granularity_bits);
  uint64_t bits_per_cluster = cluster_size * 8;
  uint64_t needed = bitmap_table_entries(disk_size, entry.granularity_bits, cluster_size);
  std::vector<uint8_t> cluster(cluster_size);
  for (uint64_t i = 0; i < needed && i < table->size(); i++) {
    uint64_t t = (*table)[i];
    uint64_t first = i * bits_per_cluster;
    if ((t & kBitmapTableOffsetMask) == 0) {
      if (t & kBitmapTableAllOnes) bits.set_bits(first, bits_per_cluster);
      continue;
    }
    auto d = co_await read(t & kBitmapTableOffsetMask, cluster);
    if (!d)
      co_return Error{d.error().code, "Could not read bitmap '" + entry.name + "' from image"};
    bits.deserialize(first, bits_per_cluster, cluster);
  }
  co_return bits;
}

bool bitmap_cluster_dirty(const HBitmap& bits, uint64_t index, uint64_t cluster_size) {
  return bits.any_set(index * cluster_size * 8, cluster_size * 8);
}

std::vector<uint8_t> serialize_bitmap_cluster(const HBitmap& bits, uint64_t index,
                                              uint64_t cluster_size) {
  std::vector<uint8_t> out(cluster_size);
  bits.serialize(index * cluster_size * 8, cluster_size * 8, out);
  return out;
}

}  // namespace strata::qcow2
