// qcow2 L2 entries: standard (64 bits) and extended (128 bits: the standard
// descriptor, then 32 allocation bits and 32 "reads as zeroes" bits, one
// pair per subcluster), classified as QEMU classifies them
// (qcow2_get_cluster_type, qcow2_get_subcluster_type), and compressed
// cluster descriptors.
//
// Contract: L2Format describes one image (cluster size, extended L2, external
// data file, version); its functions are pure. A subcluster type of kInvalid
// means the entry is corrupt (an allocation bit on an unallocated cluster,
// a subcluster both allocated and zero); the caller signals corruption.
// Images without extended L2 have one subcluster per cluster and a bitmap of
// 0 (it is neither read nor written).
// Thread rules: pure values and functions.
#pragma once

#include <cstdint>

#include "block/drivers/qcow2/format.h"

namespace strata::qcow2 {

// What a subcluster (a whole cluster without extended L2) holds, as QEMU's
// QCow2SubclusterType. kUnallocatedAlloc: a subcluster of an allocated
// cluster whose allocation bit is clear (reads from the backing file).
enum class ClusterType {
  kUnallocated,
  kUnallocatedAlloc,
  kZeroPlain,
  kZeroAlloc,
  kNormal,
  kCompressed,
  kInvalid,
};

struct L2Entry {
  uint64_t entry = 0;
  uint64_t bitmap = 0;  // extended L2 only
  bool operator==(const L2Entry&) const = default;
};

// Subclusters [from, to) (0 <= from <= to <= 32) in the allocation and
// zero halves of an extended L2 bitmap.
constexpr uint64_t alloc_range(unsigned from, unsigned to) {
  return (to >= 32 ? 0xFFFFFFFFull : (1ull << to) - 1) & ~((1ull << from) - 1);
}
constexpr uint64_t zero_range(unsigned from, unsigned to) {
  return alloc_range(from, to) << 32;
}
constexpr uint64_t kBitmapAllAlloc = alloc_range(0, 32);
constexpr uint64_t kBitmapAllZeroes = zero_range(0, 32);

// Where a compressed cluster's bytes are: `offset` in the image file and
// `bytes` as QEMU computes them (whole 512-byte sectors from the sector of
// `offset`, less the part of that sector before it).
struct CompressedExtent {
  uint64_t offset = 0;
  uint64_t bytes = 0;
};

struct L2Format {
  uint32_t cluster_bits = 16;
  bool extended = false;
  bool data_file = false;  // an external data file: offset 0 with COPIED is allocated
  bool v3 = true;

  uint64_t cluster_size() const { return uint64_t(1) << cluster_bits; }
  uint32_t subcluster_bits() const {
    return extended ? cluster_bits - kSubclusterBits : cluster_bits;
  }
  uint64_t subcluster_size() const { return uint64_t(1) << subcluster_bits(); }
  unsigned subclusters() const { return extended ? kSubclustersPerCluster : 1; }
  uint32_t entry_bytes() const { return extended ? 16 : 8; }
  uint64_t entries_per_table() const { return cluster_size() / entry_bytes(); }

  L2Entry load(const uint8_t* table, uint64_t index) const;
  void store(uint8_t* table, uint64_t index, const L2Entry& e) const;

  // The cluster as a whole (QEMU's qcow2_get_cluster_type): never
  // kUnallocatedAlloc or kInvalid; with extended L2 never a zero type.
  ClusterType cluster_type(uint64_t entry) const;
  // Subcluster `sc` of the cluster; kInvalid for a corrupt entry (the
  // whole entry and bitmap are checked, not only subcluster `sc`).
  ClusterType subcluster_type(const L2Entry& e, unsigned sc) const;
  // How many subclusters from `sc` on have the type of `sc` (QEMU's
  // qcow2_get_subcluster_range_type); compressed clusters and standard
  // entries count to the end of the cluster. 0 for a corrupt entry.
  unsigned same_type_run(const L2Entry& e, unsigned sc, ClusterType* type) const;
  // Whether a write to the cluster must allocate a new one (unallocated,
  // zero without an offset, compressed, or shared: COPIED clear).
  bool needs_new_cluster(uint64_t entry) const;
  // Whether the cluster holds a host cluster of its own.
  bool allocated(uint64_t entry) const;

  CompressedExtent compressed_extent(uint64_t entry) const;
  // The descriptor of compressed data of `bytes` bytes at host `offset`.
  uint64_t compressed_entry(uint64_t offset, uint64_t bytes) const;
};

}  // namespace strata::qcow2
