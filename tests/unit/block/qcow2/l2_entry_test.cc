// L2 entries: cluster and subcluster types as QEMU classifies them, runs of
// one type, compressed descriptors; zstd and zlib cluster compression.
#include "block/drivers/qcow2/l2_entry.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "block/drivers/qcow2/compress.h"

namespace strata::qcow2 {
namespace {

L2Format extended() {
  return L2Format{16, true, false, true};
}

TEST(Qcow2L2Entry, StandardTypes) {
  L2Format f{16, false, false, true};
  EXPECT_EQ(f.cluster_type(0), ClusterType::kUnallocated);
  EXPECT_EQ(f.cluster_type(kZeroFlag), ClusterType::kZeroPlain);
  EXPECT_EQ(f.cluster_type(0x50000 | kZeroFlag | kCopied), ClusterType::kZeroAlloc);
  EXPECT_EQ(f.cluster_type(0x50000 | kCopied), ClusterType::kNormal);
  EXPECT_EQ(f.cluster_type(kCompressed | 0x1234), ClusterType::kCompressed);
  // Offset 0 is unallocated, even with COPIED, unless data live in a data file.
  EXPECT_EQ(f.cluster_type(kCopied), ClusterType::kUnallocated);
  f.data_file = true;
  EXPECT_EQ(f.cluster_type(kCopied), ClusterType::kNormal);
  EXPECT_EQ(f.cluster_type(0), ClusterType::kUnallocated);
  EXPECT_FALSE(f.needs_new_cluster(kCopied));
  EXPECT_TRUE(f.needs_new_cluster(0x50000));  // shared (no COPIED)
}

TEST(Qcow2L2Entry, SubclusterTypes) {
  L2Format f = extended();
  L2Entry allocated{0x50000 | kCopied, alloc_range(0, 4) | zero_range(4, 8)};
  EXPECT_EQ(f.subcluster_type(allocated, 0), ClusterType::kNormal);
  EXPECT_EQ(f.subcluster_type(allocated, 5), ClusterType::kZeroAlloc);
  EXPECT_EQ(f.subcluster_type(allocated, 9), ClusterType::kUnallocatedAlloc);
  L2Entry plain{0, zero_range(2, 3)};
  EXPECT_EQ(f.subcluster_type(plain, 2), ClusterType::kZeroPlain);
  EXPECT_EQ(f.subcluster_type(plain, 3), ClusterType::kUnallocated);
  // The zero flag means nothing with extended L2.
  EXPECT_EQ(f.cluster_type(kZeroFlag), ClusterType::kUnallocated);
  // Corrupt: allocation bits without a cluster, a subcluster both ways.
  EXPECT_EQ(f.subcluster_type({0, 1}, 5), ClusterType::kInvalid);
  EXPECT_EQ(f.subcluster_type({0x50000, (1ull << 32) | 1}, 9), ClusterType::kInvalid);
  EXPECT_EQ(f.subcluster_type({kCompressed | 0x50000, 0}, 3), ClusterType::kCompressed);
}

TEST(Qcow2L2Entry, RunsOfOneType) {
  L2Format f = extended();
  ClusterType t;
  L2Entry e{0x50000 | kCopied, alloc_range(0, 4) | zero_range(4, 8) | alloc_range(20, 32)};
  EXPECT_EQ(f.same_type_run(e, 0, &t), 4u);
  EXPECT_EQ(t, ClusterType::kNormal);
  EXPECT_EQ(f.same_type_run(e, 2, &t), 2u);
  EXPECT_EQ(f.same_type_run(e, 4, &t), 4u);
  EXPECT_EQ(t, ClusterType::kZeroAlloc);
  EXPECT_EQ(f.same_type_run(e, 8, &t), 12u);
  EXPECT_EQ(t, ClusterType::kUnallocatedAlloc);
  EXPECT_EQ(f.same_type_run(e, 20, &t), 12u);
  EXPECT_EQ(f.same_type_run({kCompressed | 0x50000, 0}, 7, &t), 25u);
  EXPECT_EQ(f.same_type_run({0, 1}, 0, &t), 0u);
  EXPECT_EQ(t, ClusterType::kInvalid);
  L2Format standard{16, false, false, true};
  EXPECT_EQ(standard.same_type_run({0x50000 | kCopied, 0}, 0, &t), 1u);
}

TEST(Qcow2L2Entry, LoadStoreWidths) {
  std::vector<uint8_t> table(64, 0);
  L2Format f = extended();
  f.store(table.data(), 2, {0x1122334455667788ull, 0x99});
  EXPECT_EQ(load_be64(&table[32]), 0x1122334455667788ull);
  EXPECT_EQ(load_be64(&table[40]), 0x99u);
  EXPECT_EQ(f.load(table.data(), 2), (L2Entry{0x1122334455667788ull, 0x99}));
  L2Format s{16, false, false, true};
  EXPECT_EQ(s.load(table.data(), 4).entry, 0x1122334455667788ull);
  EXPECT_EQ(s.load(table.data(), 4).bitmap, 0u);
  EXPECT_EQ(f.entries_per_table(), 4096u);
  EXPECT_EQ(f.subcluster_size(), 2048u);
}

TEST(Qcow2L2Entry, CompressedDescriptorRoundTrip) {
  for (uint32_t bits : {9u, 12u, 16u, 21u}) {
    L2Format f{bits, false, false, true};
    uint64_t cs = f.cluster_size();
    for (uint64_t off : {uint64_t(0x30000) + 17, uint64_t(0x40000), uint64_t(123457)}) {
      uint64_t len = cs / 3 + 1;
      CompressedExtent c = f.compressed_extent(f.compressed_entry(off, len));
      EXPECT_EQ(c.offset, off);
      EXPECT_GE(c.bytes, len);  // whole sectors
      EXPECT_LT(c.bytes, len + 512);
    }
  }
}

TEST(Qcow2Compress, ZstdAndZlibRoundTrip) {
  std::mt19937 rng(7);
  std::vector<uint8_t> in(65536);
  for (size_t i = 0; i < in.size(); i++) in[i] = uint8_t((i / 100) ^ (rng() % 4));
  for (uint8_t type : {uint8_t(0), uint8_t(1)}) {
    std::vector<uint8_t> packed(in.size() - 1), out(in.size());
    size_t n = compress_cluster(type, in, packed);
    ASSERT_GT(n, 0u);
    ASSERT_LT(n, in.size());
    // Trailing bytes (the rest of the last sector) are ignored.
    std::vector<uint8_t> padded(packed.begin(), packed.begin() + n);
    padded.resize(n + 300, 0xAB);
    ASSERT_TRUE(decompress_cluster(type, padded, out).ok());
    EXPECT_EQ(out, in);
  }
  // Random data does not shrink: written uncompressed.
  std::vector<uint8_t> noise(65536), packed(65535);
  for (auto& b : noise) b = uint8_t(rng());
  EXPECT_EQ(compress_cluster(1, noise, packed), 0u);
  // Garbage does not decode.
  std::vector<uint8_t> out(65536);
  EXPECT_FALSE(decompress_cluster(1, std::vector<uint8_t>(100, 0x55), out).ok());
}

}  // namespace
}  // namespace strata::qcow2
