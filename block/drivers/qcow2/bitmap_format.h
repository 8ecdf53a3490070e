// The qcow2 bitmaps extension on disk (QEMU's docs/interop/qcow2.txt,
// "Bitmaps extension"): the header extension, the bitmap directory, bitmap
// tables and the data clusters, with the checks QEMU applies when it loads
// them (block/qcow2-bitmap.c) and its messages.
//
// Contract: pure encoding and decoding plus a loader that reads through a
// caller-supplied cluster reader, so the driver decides how it reaches the
// file and these functions never touch driver state. Every parse validates
// before it returns; a corrupt directory or table gives an Error, never a
// crash. All integers on disk are big-endian; bitmap data is in HBitmap's
// serialization layout (bit i of a cluster is bit i % 8 of byte i / 8).
// Thread rules: pure functions (the loader runs on the caller's loop).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "block/bitmap/hbitmap.h"
#include "block/drivers/qcow2/format.h"
#include "strata/result.h"
#include "strata/task.h"

namespace strata::qcow2 {

// kExtBitmaps and kAutoclearBitmaps come from format.h.
constexpr uint32_t kMaxBitmaps = 65535;
constexpr uint64_t kMaxBitmapDirectorySize = 64 << 20;
constexpr uint32_t kBitmapFlagInUse = 1u << 0;
constexpr uint32_t kBitmapFlagAuto = 1u << 1;
constexpr uint8_t kBitmapTypeDirtyTracking = 1;
constexpr uint32_t kMinBitmapGranularityBits = 9;
constexpr uint32_t kMaxBitmapGranularityBits = 31;
constexpr uint32_t kMaxBitmapTableSize = 0x8000000;
constexpr uint64_t kMaxBitmapPhysSize = 0x20000000;
constexpr uint64_t kBitmapTableOffsetMask = 0x00fffffffffffe00ull;
constexpr uint64_t kBitmapTableReservedMask = 0xff000000000001feull;
constexpr uint64_t kBitmapTableAllOnes = 1;

// The 24 bytes of the header extension.
struct BitmapsExtension {
  uint32_t nb_bitmaps = 0;
  uint64_t directory_size = 0;
  uint64_t directory_offset = 0;
};

Result<BitmapsExtension> parse_bitmaps_extension(std::span<const uint8_t> data,
                                                 uint64_t cluster_size);
std::vector<uint8_t> encode_bitmaps_extension(const BitmapsExtension& ext);

struct BitmapDirEntry {
  uint64_t table_offset = 0;
  uint32_t table_size = 0;  // entries
  uint32_t flags = 0;
  uint8_t type = kBitmapTypeDirtyTracking;
  uint8_t granularity_bits = 16;
  std::string name;
  bool in_use() const { return flags & kBitmapFlagInUse; }
  bool auto_flag() const { return flags & kBitmapFlagAuto; }
};

// The directory as QEMU's bitmap_list_load checks it: "Broken bitmap
// directory", "Bitmap extra data is not supported", "Bitmap '%s' doesn't
// satisfy the constraints", "More/Less bitmaps found than specified in
// header extension", and names must be unique.
Result<std::vector<BitmapDirEntry>> parse_bitmap_directory(std::span<const uint8_t> dir,
                                                           uint32_t nb_bitmaps,
                                                           uint64_t cluster_size,
                                                           uint64_t disk_size);
std::vector<uint8_t> encode_bitmap_directory(const std::vector<BitmapDirEntry>& entries);

// Entries a bitmap table needs to cover `disk_size` bytes.
uint64_t bitmap_table_entries(uint64_t disk_size, uint32_t granularity_bits, uint64_t cluster_size);
// Decodes and checks (QEMU's check_table_entry) a table of `entries`.
Result<std::vector<uint64_t>> parse_bitmap_table(std::span<const uint8_t> data, uint32_t entries,
                                                 uint64_t cluster_size, const std::string& name);
std::vector<uint8_t> encode_bitmap_table(const std::vector<uint64_t>& table);

// Reads `buf.size()` bytes of the image file at `offset`.
using ClusterReader = std::function<Task<Result<void>>(uint64_t offset, std::span<uint8_t> buf)>;

// Loads a bitmap: reads and checks its table, then its data clusters
// (all-zeroes and all-ones entries need no cluster). The result covers
// `disk_size` bytes at the entry's granularity. An in-use entry must not be
// loaded (it is inconsistent; the caller makes an empty bitmap).
Task<Result<HBitmap>> co_load_bitmap(const BitmapDirEntry& entry, uint64_t disk_size,
                                     uint64_t cluster_size, ClusterReader read);

// Store side: does data cluster `index` of `bits` hold any dirty bit, and
// its contents (cluster_size bytes).
bool bitmap_cluster_dirty(const HBitmap& bits, uint64_t index, uint64_t cluster_size);
std::vector<uint8_t> serialize_bitmap_cluster(const HBitmap& bits, uint64_t index,
                                              uint64_t cluster_size);

}  // namespace strata::qcow2
