#include "block/drivers/qcow2/l2_entry.h"

namespace strata::qcow2 {

namespace {

unsigned trailing_ones(uint32_t v) {
  return v == 0xFFFFFFFFu ? 32 : unsigned(__builtin_ctz(~v));
}

unsigned trailing_zeros(uint32_t v) {
  return v == 0 ? 32 : unsigned(__builtin_ctz(v));
}

}  // namespace

L2Entry L2Format::load(const uint8_t* table, uint64_t index) const {
  const uint8_t* p = table + index * entry_bytes();
  return {load_be64(p), extended ? load_be64(p + 8) : 0};
}

void L2Format::store(uint8_t* table, uint64_t index, const L2Entry& e) const {
  uint8_t* p = table + index * entry_bytes();
  store_be64(p, e.entry);
  if (extended) store_be64(p + 8, e.bitmap);
}

ClusterType L2Format::cluster_type(uint64_t entry) const {
  if (entry & kCompressed) return ClusterType::kCompressed;
  bool has_offset = (entry & kOffsetMask) != 0;
  if ((entry & kZeroFlag) && !extended) {
    return has_offset ? ClusterType::kZeroAlloc : ClusterType::kZeroPlain;
  }
  // Offset 0 is a valid data file offset; COPIED tells it from unallocated.
  if (!has_offset && !(data_file && (entry & kCopied))) return ClusterType::kUnallocated;
  return ClusterType::kNormal;
}

ClusterType L2Format::subcluster_type(const L2Entry& e, unsigned sc) const {
  ClusterType type = cluster_type(e.entry);
  if (!extended || type == ClusterType::kCompressed) return type;
  uint64_t zero_bit = 1ull << (32 + sc);
  uint64_t alloc_bit = 1ull << sc;
  if (type == ClusterType::kNormal) {
    if ((e.bitmap >> 32) & e.bitmap) return ClusterType::kInvalid;
    if (e.bitmap & zero_bit) return ClusterType::kZeroAlloc;
    return (e.bitmap & alloc_bit) ? ClusterType::kNormal : ClusterType::kUnallocatedAlloc;
  }
  if (e.bitmap & kBitmapAllAlloc) return ClusterType::kInvalid;
  return (e.bitmap & zero_bit) ? ClusterType::kZeroPlain : ClusterType::kUnallocated;
}

unsigned L2Format::same_type_run(const L2Entry& e, unsigned sc, ClusterType* type) const {
  *type = subcluster_type(e, sc);
  if (*type == ClusterType::kInvalid) return 0;
  if (!extended || *type == ClusterType::kCompressed) return subclusters() - sc;
  uint32_t alloc = uint32_t(e.bitmap);
  uint32_t zero = uint32_t(e.bitmap >> 32);
  uint32_t below = uint32_t(alloc_range(0, sc));
  switch (*type) {
    case ClusterType::kNormal:
      return trailing_ones(alloc | below) - sc;
    case ClusterType::kZeroPlain:
    case ClusterType::kZeroAlloc:
      return trailing_ones(zero | below) - sc;
    default:
      return trailing_zeros((alloc | zero) & ~below) - sc;
  }
}

bool L2Format::needs_new_cluster(uint64_t entry) const {
  ClusterType t = cluster_type(entry);
  bool owned = (t == ClusterType::kNormal || t == ClusterType::kZeroAlloc) && (entry & kCopied);
  return !owned;
}

bool L2Format::allocated(uint64_t entry) const {
  ClusterType t = cluster_type(entry);
  return t == ClusterType::kNormal || t == ClusterType::kZeroAlloc || t == ClusterType::kCompressed;
}

CompressedExtent L2Format::compressed_extent(uint64_t entry) const {
  uint32_t shift = 62 - (cluster_bits - 8);
  uint64_t offset = entry & ((uint64_t(1) << shift) - 1);
  uint64_t sectors = ((entry >> shift) & ((uint64_t(1) << (cluster_bits - 8)) - 1)) + 1;
  return {offset, sectors * 512 - (offset & 511)};
}

uint64_t L2Format::compressed_entry(uint64_t offset, uint64_t bytes) const {
  uint32_t shift = 62 - (cluster_bits - 8);
  uint64_t sectors = (offset + bytes - 1) / 512 - offset / 512;
  return kCompressed | (sectors << shift) | offset;
}

}  // namespace strata::qcow2
