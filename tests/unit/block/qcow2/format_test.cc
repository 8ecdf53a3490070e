// Pure qcow2 format pieces: header round trips (unknown extensions kept),
// refcount entries of every width, snapshot table round trips, compression.
#include <gtest/gtest.h>

#include <random>

#include "block/drivers/qcow2/compress.h"
#include "block/drivers/qcow2/format.h"
#include "block/drivers/qcow2/refcount.h"
#include "block/drivers/qcow2/snapshot.h"

namespace strata::qcow2 {
namespace {

Header sample_header() {
  Header h;
  h.size = 1ull << 30;
  h.l1_size = 2;
  h.l1_table_offset = 0x30000;
  h.refcount_table_offset = 0x10000;
  h.refcount_table_clusters = 1;
  h.backing_file = "base.qcow2";
  h.backing_format = "qcow2";
  h.autoclear_features = kAutoclearBitmaps;
  h.extensions.push_back({kExtBitmaps, std::vector<uint8_t>(24, 7)});
  h.extensions.push_back({0x12345678, {1, 2, 3}});
  return h;
}

TEST(Qcow2Header, RoundTripKeepsExtensions) {
  Header h = sample_header();
  auto bytes = serialize_header(h);
  ASSERT_TRUE(bytes.ok());
  auto parsed = parse_header(*bytes);
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  EXPECT_EQ(parsed->backing_file, "base.qcow2");
  EXPECT_EQ(parsed->backing_format, "qcow2");
  EXPECT_TRUE(parsed->had_feature_table);
  ASSERT_EQ(parsed->extensions.size(), 2u);
  EXPECT_EQ(parsed->extensions[0].type, kExtBitmaps);
  EXPECT_EQ(parsed->extensions[1].data, (std::vector<uint8_t>{1, 2, 3}));
  auto again = serialize_header(*parsed);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *bytes);
}

TEST(Qcow2Header, RefusesHostileValues) {
  Header h = sample_header();
  auto bytes = *serialize_header(h);
  auto bad = bytes;
  store_be32(&bad[20], 30);  // cluster bits
  EXPECT_FALSE(parse_header(bad).ok());
  bad = bytes;
  store_be32(&bad[36], 0x10000000);  // L1 far too large
  EXPECT_FALSE(parse_header(bad).ok());
  bad = bytes;
  store_be32(&bad[36], 1);  // L1 too small for the size
  EXPECT_FALSE(parse_header(bad).ok());
  bad = bytes;
  store_be32(&bad[kV3HeaderLength + 4], 0xFFFF);  // extension length past the cluster
  EXPECT_FALSE(parse_header(bad).ok());
  bad = bytes;
  store_be32(&bad[4], 4);  // version
  EXPECT_FALSE(parse_header(bad).ok());
  EXPECT_FALSE(parse_header(std::vector<uint8_t>(10, 0)).ok());
}

TEST(Qcow2Header, V2HasNoFeatureFields) {
  Header h = sample_header();
  h.version = 2;
  h.extensions.clear();
  h.autoclear_features = 0;
  auto bytes = *serialize_header(h);
  EXPECT_EQ(load_be64(&bytes[8]), 72u + 16 + 8);  // header, backing format ext, end
  auto parsed = *parse_header(bytes);
  EXPECT_EQ(parsed.version, 2u);
  EXPECT_EQ(parsed.refcount_order, 4u);
}

TEST(Qcow2Header, DataFileNameRoundTripsInQemuOrder) {
  Header h = sample_header();
  h.incompatible_features |= kIncompatDataFile;
  h.autoclear_features |= kAutoclearDataFileRaw;
  h.data_file = "disk.data";
  auto bytes = *serialize_header(h);
  // Backing format, then the data file, then the feature table (as QEMU).
  uint64_t pos = kV3HeaderLength;
  EXPECT_EQ(load_be32(&bytes[pos]), kExtBackingFormat);
  pos += 8 + round_up(load_be32(&bytes[pos + 4]), 8);
  EXPECT_EQ(load_be32(&bytes[pos]), kExtDataFile);
  EXPECT_EQ(load_be32(&bytes[pos + 4]), 9u);
  pos += 8 + 16;
  EXPECT_EQ(load_be32(&bytes[pos]), kExtFeatureTable);
  auto parsed = *parse_header(bytes);
  EXPECT_EQ(parsed.data_file, "disk.data");
  EXPECT_TRUE(parsed.has_data_file());
  EXPECT_TRUE(parsed.data_file_raw());
  EXPECT_EQ(*serialize_header(parsed), bytes);
}

TEST(Qcow2Header, CompressionTypeMustAgreeWithItsBit) {
  Header h = sample_header();
  h.compression_type = kCompressionZstd;
  EXPECT_FALSE(parse_header(*serialize_header(h)).ok());  // bit clear
  h.incompatible_features |= kIncompatCompression;
  auto zstd = parse_header(*serialize_header(h));
  ASSERT_TRUE(zstd.ok());
  EXPECT_EQ(zstd->compression_type, kCompressionZstd);
  h.compression_type = kCompressionZlib;  // bit set, type zlib
  auto bad = parse_header(*serialize_header(h));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message,
            "qcow2: Compression type incompatible feature bit must not be set");
  h.compression_type = 7;
  bad = parse_header(*serialize_header(h));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message, "qcow2: unknown compression type: 7");
}

TEST(Qcow2Header, ExtendedL2TablesMapHalfAsMuch) {
  Header h = sample_header();
  h.incompatible_features |= kIncompatExtendedL2;
  EXPECT_EQ(h.l2_bits(), 12u);
  // 1 GiB at 64 KiB clusters: 4 L1 entries with extended L2 (2 without).
  h.l1_size = 2;
  EXPECT_FALSE(parse_header(*serialize_header(h)).ok());
  h.l1_size = 4;
  EXPECT_TRUE(parse_header(*serialize_header(h)).ok());
  h.cluster_bits = 13;  // 256-byte subclusters
  h.l1_size = 4096;
  auto bad = parse_header(*serialize_header(h));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message, "Unsupported subcluster size: 256");
}

TEST(Qcow2Refcount, EveryWidthRoundTrips) {
  std::mt19937_64 rng(1);
  for (uint32_t order = 0; order <= 6; order++) {
    uint32_t bits = 1u << order;
    std::vector<uint8_t> block(4096, 0);
    uint64_t entries = 4096 * 8 / bits;
    std::vector<uint64_t> model(entries);
    uint64_t max = bits == 64 ? UINT64_MAX : (1ull << bits) - 1;
    for (int i = 0; i < 5000; i++) {
      uint64_t idx = rng() % entries;
      uint64_t v = rng() & max;
      refblock_set(block.data(), order, idx, v);
      model[idx] = v;
    }
    for (uint64_t i = 0; i < entries; i++) {
      ASSERT_EQ(refblock_get(block.data(), order, i), model[i])
          << "bits " << bits << " entry " << i;
    }
  }
}

TEST(Qcow2Refcount, SubByteEntriesAreLsbFirst) {
  std::vector<uint8_t> block(16, 0);
  refblock_set(block.data(), 0, 0, 1);
  refblock_set(block.data(), 0, 3, 1);
  EXPECT_EQ(block[0], 0x09);
  refblock_set(block.data(), 2, 1, 0xA);
  EXPECT_EQ(block[0] >> 4, 0xA);
  refblock_set(block.data(), 4, 1, 0x1234);
  EXPECT_EQ(block[2], 0x12);
  EXPECT_EQ(block[3], 0x34);
}

TEST(Qcow2Snapshot, TableRoundTrip) {
  Snapshot a;
  a.l1_table_offset = 0x70000;
  a.l1_size = 2;
  a.id = "1";
  a.name = "first";
  a.date_sec = 1234;
  a.disk_size = 1 << 30;
  a.has_disk_size = true;
  a.icount = 5;
  a.has_icount = true;
  Snapshot b = a;
  b.id = "2";
  b.name = "second snapshot";
  b.vm_state_size = 5ull << 32;
  b.unknown_extra = {9, 9, 9, 9, 9, 9, 9, 9};
  auto bytes = serialize_snapshot_table({a, b});
  EXPECT_EQ(bytes.size() % 8, 0u);
  auto parsed = parse_snapshot_table(bytes, 2);
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ((*parsed)[0].name, "first");
  EXPECT_EQ((*parsed)[1].name, "second snapshot");
  EXPECT_EQ((*parsed)[1].vm_state_size, 5ull << 32);
  EXPECT_EQ((*parsed)[1].unknown_extra, b.unknown_extra);
  EXPECT_EQ(serialize_snapshot_table(*parsed), bytes);
  EXPECT_FALSE(parse_snapshot_table(bytes, 3).ok());
}

TEST(Qcow2Compress, RoundTripAndIncompressible) {
  std::vector<uint8_t> in(65536);
  for (size_t i = 0; i < in.size(); i++) in[i] = uint8_t(i / 100);
  std::vector<uint8_t> out(65535), back(65536);
  size_t n = deflate_cluster(in, out);
  ASSERT_GT(n, 0u);
  ASSERT_TRUE(inflate_cluster({out.data(), n}, back).ok());
  EXPECT_EQ(back, in);
  std::mt19937 rng(2);
  for (auto& b : in) b = uint8_t(rng());
  EXPECT_EQ(deflate_cluster(in, out), 0u);
  std::vector<uint8_t> junk(100, 0xff);
  EXPECT_FALSE(inflate_cluster(junk, back).ok());
}

}  // namespace
}  // namespace strata::qcow2
