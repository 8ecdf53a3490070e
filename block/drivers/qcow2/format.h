// qcow2 on-disk format: constants, entry bit layouts, big-endian helpers and
// the header (with its extensions) as a plain value.
//
// Contract: parse_header() validates everything it can without reading past
// cluster 0 and refuses hostile values with a clear message; serialize_header()
// produces cluster 0 as QEMU writes it (header, unknown header fields,
// backing format, feature table, preserved extensions in their original
// order, end marker, backing file name). Unknown extensions and the bitmaps
// extension are kept byte for byte in `extensions`.
// Thread rules: pure values and functions.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "strata/result.h"

namespace strata::qcow2 {

constexpr uint32_t kMagic = 0x514649FB;
constexpr uint32_t kMinClusterBits = 9;
constexpr uint32_t kMaxClusterBits = 21;
constexpr uint32_t kV2HeaderLength = 72;
constexpr uint32_t kV3HeaderLength = 112;  // QEMU's struct, with compression type
constexpr uint64_t kMaxL1Bytes = 32ull << 20;
constexpr uint64_t kMaxRefcountTableBytes = 8ull << 20;

// Incompatible feature bits.
constexpr uint64_t kIncompatDirty = 1ull << 0;
constexpr uint64_t kIncompatCorrupt = 1ull << 1;
constexpr uint64_t kIncompatDataFile = 1ull << 2;
constexpr uint64_t kIncompatCompression = 1ull << 3;
constexpr uint64_t kIncompatExtendedL2 = 1ull << 4;
constexpr uint64_t kIncompatKnown = kIncompatDirty | kIncompatCorrupt | kIncompatDataFile |
                                    kIncompatCompression | kIncompatExtendedL2;
// Compatible feature bits.
constexpr uint64_t kCompatLazyRefcounts = 1ull << 0;
// Autoclear feature bits.
constexpr uint64_t kAutoclearBitmaps = 1ull << 0;
constexpr uint64_t kAutoclearDataFileRaw = 1ull << 1;
// The autoclear bits Strata keeps on a writable open (others are cleared).
constexpr uint64_t kAutoclearKept = kAutoclearBitmaps | kAutoclearDataFileRaw;

// Compression types (header byte 104).
constexpr uint8_t kCompressionZlib = 0;
constexpr uint8_t kCompressionZstd = 1;

// Extended L2 entries: 32 subclusters per cluster.
constexpr uint32_t kSubclusterBits = 5;
constexpr uint32_t kSubclustersPerCluster = 1u << kSubclusterBits;

// Header extension types.
constexpr uint32_t kExtEnd = 0;
constexpr uint32_t kExtBackingFormat = 0xE2792ACA;
constexpr uint32_t kExtFeatureTable = 0x6803F857;
constexpr uint32_t kExtBitmaps = 0x23852875;
constexpr uint32_t kExtCryptoHeader = 0x0537BE77;
constexpr uint32_t kExtDataFile = 0x44415441;

// L1/L2 entries.
constexpr uint64_t kOffsetMask = 0x00FFFFFFFFFFFE00ull;
constexpr uint64_t kCopied = 1ull << 63;
constexpr uint64_t kCompressed = 1ull << 62;
constexpr uint64_t kZeroFlag = 1ull;
constexpr uint64_t kL1ReservedMask = 0x7F000000000001FFull;
constexpr uint64_t kL2ReservedMask = 0x3F000000000001FEull;
constexpr uint64_t kRefTableOffsetMask = 0xFFFFFFFFFFFFFE00ull;

inline uint16_t load_be16(const uint8_t* p) {
  return uint16_t(p[0] << 8 | p[1]);
}
inline uint32_t load_be32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}
inline uint64_t load_be64(const uint8_t* p) {
  return uint64_t(load_be32(p)) << 32 | load_be32(p + 4);
}
inline void store_be16(uint8_t* p, uint16_t v) {
  p[0] = uint8_t(v >> 8);
  p[1] = uint8_t(v);
}
inline void store_be32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = uint8_t(v >> (24 - 8 * i));
}
inline void store_be64(uint8_t* p, uint64_t v) {
  store_be32(p, uint32_t(v >> 32));
  store_be32(p + 4, uint32_t(v));
}

inline uint64_t round_up(uint64_t v, uint64_t a) {
  return (v + a - 1) / a * a;
}
inline uint64_t div_round_up(uint64_t v, uint64_t a) {
  return (v + a - 1) / a;
}

// One entry of the feature name table.
struct FeatureName {
  uint8_t type = 0;  // 0 incompatible, 1 compatible, 2 autoclear
  uint8_t bit = 0;
  std::string name;
};

// A header extension kept as raw bytes (bitmaps, unknown ones).
struct HeaderExtension {
  uint32_t type = 0;
  std::vector<uint8_t> data;
};

struct Header {
  uint32_t version = 3;
  uint64_t backing_file_offset = 0;
  uint32_t backing_file_size = 0;
  uint32_t cluster_bits = 16;
  uint64_t size = 0;
  uint32_t crypt_method = 0;
  uint32_t l1_size = 0;
  uint64_t l1_table_offset = 0;
  uint64_t refcount_table_offset = 0;
  uint32_t refcount_table_clusters = 0;
  uint32_t nb_snapshots = 0;
  uint64_t snapshots_offset = 0;
  uint64_t incompatible_features = 0;
  uint64_t compatible_features = 0;
  uint64_t autoclear_features = 0;
  uint32_t refcount_order = 4;
  uint32_t header_length = kV3HeaderLength;
  uint8_t compression_type = 0;
  std::vector<uint8_t> unknown_fields;  // bytes past QEMU's struct, up to header_length

  std::string backing_file;
  std::string backing_format;
  bool has_backing_format = false;
  std::string data_file;  // the external data file extension's name (may be empty)
  std::vector<FeatureName> feature_names;
  bool had_feature_table = false;
  std::vector<HeaderExtension> extensions;  // preserved as read, in order

  uint64_t cluster_size() const { return 1ull << cluster_bits; }
  uint32_t refcount_bits() const { return 1u << refcount_order; }
  bool extended_l2() const { return incompatible_features & kIncompatExtendedL2; }
  bool has_data_file() const { return incompatible_features & kIncompatDataFile; }
  bool data_file_raw() const { return autoclear_features & kAutoclearDataFileRaw; }
  // Bits of guest address an L2 table maps: a cluster's worth of 8-byte
  // (16-byte with extended L2) entries, each mapping one cluster.
  uint32_t l2_bits() const { return cluster_bits - (extended_l2() ? 4 : 3); }
  const HeaderExtension* find_extension(uint32_t type) const;
};

// Parses cluster 0 (or as much of it as the file has).
Result<Header> parse_header(std::span<const uint8_t> data);
// Serializes into one cluster; ENOSPC if it does not fit.
Result<std::vector<uint8_t>> serialize_header(const Header& h);
// QEMU's feature name table.
std::vector<FeatureName> default_feature_names();
// "Unsupported IMGFMT feature(s): name, name2" for unknown incompatible bits.
std::string describe_unknown_incompat(const Header& h, uint64_t bits);

}  // namespace strata::qcow2
