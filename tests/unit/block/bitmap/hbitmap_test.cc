// HBitmap against a naive model with one bool per granule: exhaustive on
// small bitmaps, randomized (fixed seeds) on multi-level ones.
#include "block/bitmap/hbitmap.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <optional>
#include <random>
#include <vector>

namespace strata {
namespace {

// One bool per granule; the reference every HBitmap answer is checked against.
struct Model {
  uint64_t size;
  uint32_t gran_bits;
  std::vector<bool> bits;

  Model(uint64_t size_, uint32_t g) : size(size_), gran_bits(g) {
    uint64_t gran = uint64_t{1} << g;
    bits.assign((size + gran - 1) / gran, false);
  }
  uint64_t gran() const { return uint64_t{1} << gran_bits; }
  uint64_t count() const { return std::count(bits.begin(), bits.end(), true); }
  void set_bits(uint64_t first, uint64_t n) {
    for (uint64_t i = first; i < first + n && i < bits.size(); i++) bits[i] = true;
  }
  void reset_bits(uint64_t first, uint64_t n) {
    for (uint64_t i = first; i < first + n && i < bits.size(); i++) bits[i] = false;
  }
  // Byte ranges: set touches, reset covers (see hbitmap.h).
  void set(uint64_t off, uint64_t len) {
    for (uint64_t i = 0; i < bits.size(); i++) {
      uint64_t s = i * gran(), e = std::min(s + gran(), size);
      if (s < off + len && off < e) bits[i] = true;
    }
  }
  void reset(uint64_t off, uint64_t len) {
    uint64_t end = std::min(off + len, size);
    for (uint64_t i = 0; i < bits.size(); i++) {
      uint64_t s = i * gran(), e = std::min(s + gran(), size);
      if (off <= s && e <= end) bits[i] = false;
    }
  }
  std::optional<uint64_t> next(uint64_t from, uint64_t end, bool value) const {
    for (uint64_t i = from; i < std::min<uint64_t>(end, bits.size()); i++) {
      if (bits[i] == value) return i;
    }
    return std::nullopt;
  }
  // Maximal dirty byte extents within [off, end).
  std::vector<BitmapExtent> extents(uint64_t off, uint64_t end) const {
    std::vector<BitmapExtent> out;
    end = std::min(end, size);
    for (uint64_t b = off; b < end;) {
      uint64_t i = b / gran();
      uint64_t stop = std::min((i + 1) * gran(), end);
      if (bits[i]) {
        if (!out.empty() && out.back().offset + out.back().length == b) {
          out.back().length += stop - b;
        } else {
          out.push_back({b, stop - b});
        }
      }
      b = stop;
    }
    return out;
  }
};

std::vector<BitmapExtent> extents_of(const HBitmap& hb, uint64_t off, uint64_t end) {
  std::vector<BitmapExtent> out;
  hb.for_each_dirty_extent([&](const BitmapExtent& e) { out.push_back(e); }, off, end);
  return out;
}

// Full comparison: every bit, count, and next set/clear from every position.
void expect_same(const HBitmap& hb, const Model& m) {
  ASSERT_EQ(hb.bits(), m.bits.size());
  ASSERT_EQ(hb.count(), m.count());
  uint64_t n = m.bits.size();
  std::optional<uint64_t> next_set, next_clear;
  for (uint64_t i = n; i-- > 0;) {
    if (m.bits[i])
      next_set = i;
    else
      next_clear = i;
    ASSERT_EQ(hb.get_bit(i), m.bits[i]) << "bit " << i;
    ASSERT_EQ(hb.next_set_bit(i, n), next_set) << "from " << i;
    ASSERT_EQ(hb.next_clear_bit(i, n), next_clear) << "from " << i;
  }
  ASSERT_FALSE(hb.next_set_bit(n, n + 100).has_value());
}

TEST(HBitmap, GeometryAndMemory) {
  HBitmap empty(0, 16);
  EXPECT_EQ(empty.bits(), 0u);
  EXPECT_FALSE(empty.next_set_bit(0, 10));
  HBitmap hb(10487296, 16);  // not a multiple of the granularity
  EXPECT_EQ(hb.bits(), 161u);
  EXPECT_EQ(hb.granularity(), 65536u);
  // 1 TiB at 512 B: 2^31 bits; upper levels add < 2%.
  HBitmap big(uint64_t{1} << 40, 9);
  EXPECT_EQ(big.bits(), uint64_t{1} << 31);
  double ratio = double(big.memory_bytes()) / double((uint64_t{1} << 31) / 8);
  EXPECT_GE(ratio, 1.0);
  EXPECT_LT(ratio, 1.02);
  big.set(uint64_t{1} << 39, 1);
  EXPECT_EQ(big.next_dirty(0), uint64_t{1} << 39);
  EXPECT_EQ(big.count(), 1u);
}

// Every range on bitmaps around word boundaries, on a random background.
TEST(HBitmap, ExhaustiveRangesSmall) {
  std::mt19937_64 rng(1);
  for (uint64_t nbits : {1u, 63u, 64u, 65u, 130u}) {
    for (uint64_t first = 0; first < nbits; first++) {
      for (uint64_t n = 1; first + n <= nbits + 1; n++) {
        for (bool set : {true, false}) {
          HBitmap hb(nbits, 0);
          Model m(nbits, 0);
          for (uint64_t i = 0; i < nbits; i++) {
            if (rng() % 3 == 0) {
              hb.set_bits(i, 1);
              m.set_bits(i, 1);
            }
          }
          if (set) {
            hb.set_bits(first, n);
            m.set_bits(first, n);
          } else {
            hb.reset_bits(first, n);
            m.reset_bits(first, n);
          }
          ASSERT_NO_FATAL_FAILURE(expect_same(hb, m)) << nbits << " " << first << "+" << n;
        }
      }
    }
  }
}

// Random operations on multi-level bitmaps (up to four levels).
TEST(HBitmap, RandomizedMultiLevel) {
  for (uint64_t seed : {2u, 3u, 4u}) {
    std::mt19937_64 rng(seed);
    uint64_t nbits = seed == 4 ? 64 * 64 * 64 * 2 + 17 : 64 * 64 * 3 + 5;
    HBitmap hb(nbits, 0);
    Model m(nbits, 0);
    for (int op = 0; op < 200; op++) {
      uint64_t first = rng() % nbits;
      uint64_t n = rng() % 4 == 0 ? rng() % (nbits / 4) : rng() % 200 + 1;
      if (rng() % 2) {
        hb.set_bits(first, n);
        m.set_bits(first, n);
      } else {
        hb.reset_bits(first, n);
        m.reset_bits(first, n);
      }
      if (op % 10 == 0) {
        ASSERT_EQ(hb.count(), m.count());
      }
      for (int q = 0; q < 6; q++) {
        uint64_t from = rng() % nbits;
        uint64_t end = from + rng() % (q % 2 ? 5000 : nbits);
        ASSERT_EQ(hb.next_set_bit(from, end), m.next(from, end, true));
        ASSERT_EQ(hb.next_clear_bit(from, end), m.next(from, end, false));
        ASSERT_EQ(hb.get_bit(from), m.bits[from]);
      }
    }
    if (nbits < 20000) {
      ASSERT_NO_FATAL_FAILURE(expect_same(hb, m));
    }
  }
}

// Byte API with a granularity and a partial last granule.
TEST(HBitmap, ByteRangesRounding) {
  std::mt19937_64 rng(5);
  const uint64_t size = 100 * 512 + 100;
  for (int round = 0; round < 300; round++) {
    HBitmap hb(size, 9);
    Model m(size, 9);
    for (int op = 0; op < 12; op++) {
      uint64_t off = rng() % (size + 600);
      uint64_t len = rng() % 3000;
      if (rng() % 3) {
        hb.set(off, len);
        m.set(off, len);
      } else {
        hb.reset(off, len);
        m.reset(off, len);
      }
    }
    ASSERT_NO_FATAL_FAILURE(expect_same(hb, m));
    ASSERT_EQ(hb.count_bytes(), m.count() * 512);
    uint64_t off = rng() % size, end = off + rng() % size;
    ASSERT_EQ(extents_of(hb, off, end), m.extents(off, end));
    auto first = m.extents(off, end);
    auto ext = hb.next_dirty_extent(off, end);
    ASSERT_EQ(ext.has_value(), !first.empty());
    if (ext) {
      ASSERT_EQ(*ext, first.front());
      ASSERT_EQ(hb.next_dirty(off, end), first.front().offset);
    }
    for (uint64_t b = 0; b < size; b += 97) ASSERT_EQ(hb.get(b), m.bits[b / 512]);
  }
}

TEST(HBitmap, ResetCoversOnlyWholeGranulesExceptAtEnd) {
  HBitmap hb(4096 + 100, 10);  // 5 granules, the last one 100 bytes
  hb.set_all();
  EXPECT_EQ(hb.count(), 5u);
  hb.reset(1, 2047);  // covers only granule 1
  EXPECT_TRUE(hb.get_bit(0));
  EXPECT_FALSE(hb.get_bit(1));
  hb.reset(4096, 100);  // the partial last granule, whole
  EXPECT_FALSE(hb.get_bit(4));
  EXPECT_EQ(hb.next_clean(0), 1024u);
  EXPECT_EQ(hb.next_clean(10), 1024u);
  EXPECT_EQ(hb.next_dirty(1500), 2048u);
  EXPECT_EQ(hb.next_dirty(2500), 2500u);
  EXPECT_EQ(hb.count_bytes(), 3u * 1024);
}

TEST(HBitmap, TruncateGrowShrink) {
  std::mt19937_64 rng(6);
  for (int round = 0; round < 40; round++) {
    uint64_t size = rng() % 400000 + 1;
    HBitmap hb(size, 9);
    Model m(size, 9);
    for (int op = 0; op < 20; op++) {
      uint64_t off = rng() % size, len = rng() % 20000;
      hb.set(off, len);
      m.set(off, len);
    }
    uint64_t new_size = rng() % 400000;
    hb.truncate(new_size);
    Model grown(new_size, 9);
    for (uint64_t i = 0; i < grown.bits.size() && i < m.bits.size(); i++) {
      // A granule that was partial and grows keeps its bit.
      grown.bits[i] = m.bits[i];
    }
    ASSERT_EQ(hb.size(), new_size);
    ASSERT_NO_FATAL_FAILURE(expect_same(hb, grown));
    hb.set(new_size ? new_size - 1 : 0, 1);
    grown.set(new_size ? new_size - 1 : 0, 1);
    ASSERT_NO_FATAL_FAILURE(expect_same(hb, grown));
  }
}

TEST(HBitmap, MergeSameAndOtherGranularity) {
  std::mt19937_64 rng(7);
  const uint64_t size = 3 * 1024 * 1024 + 4096;
  for (uint32_t src_g : {12u, 9u, 16u}) {
    for (int round = 0; round < 6; round++) {
      HBitmap dst(size, 12), src(size, src_g);
      Model mdst(size, 12);
      for (int op = 0; op < 30; op++) {
        uint64_t off = rng() % size, len = rng() % 200000;
        if (op % 2) {
          dst.set(off, len);
          mdst.set(off, len);
        } else {
          src.set(off, len);
        }
      }
      // Every byte dirty in src becomes dirty in dst.
      src.for_each_dirty_extent([&](const BitmapExtent& e) { mdst.set(e.offset, e.length); });
      dst.merge(src);
      ASSERT_NO_FATAL_FAILURE(expect_same(dst, mdst)) << src_g;
    }
  }
  // A larger source with the same granularity is clipped.
  HBitmap small(1000, 9), large(100000, 9);
  large.set_all();
  small.merge(large);
  EXPECT_EQ(small.count(), 2u);
  EXPECT_FALSE(small.next_set_bit(2, 100));
}

TEST(HBitmap, SerializationLayout) {
  HBitmap hb(64 * 512 * 2, 9);  // 128 bits
  hb.set_bits(0, 1);
  hb.set_bits(9, 1);
  hb.set_bits(127, 1);
  std::vector<uint8_t> out(16, 0xAA);
  hb.serialize(0, 128, out);
  std::vector<uint8_t> want(16, 0);
  want[0] = 0x01;
  want[1] = 0x02;
  want[15] = 0x80;
  EXPECT_EQ(out, want);
  // A range past the end serializes as zeroes.
  std::vector<uint8_t> tail(8, 0xAA);
  hb.serialize(128, 64, tail);
  EXPECT_EQ(tail, std::vector<uint8_t>(8, 0));
}

TEST(HBitmap, SerializationRoundTripRandom) {
  std::mt19937_64 rng(8);
  const uint64_t nbits = 64 * 64 * 5 + 33;
  for (int round = 0; round < 30; round++) {
    HBitmap hb(nbits, 0), copy(nbits, 0);
    Model m(nbits, 0);
    for (int op = 0; op < 15; op++) {
      uint64_t first = rng() % nbits, n = rng() % 3000;
      hb.set_bits(first, n);
      m.set_bits(first, n);
      copy.set_bits(rng() % nbits, rng() % 100);  // noise the range replaces
    }
    // Serialize in chunks of 4096 bits (one qcow2 512-byte cluster).
    for (uint64_t first = 0; first < nbits; first += 4096) {
      uint64_t n = std::min<uint64_t>(4096, nbits - first);
      std::vector<uint8_t> buf(HBitmap::serialized_bytes(n));
      hb.serialize(first, n, buf);
      for (uint64_t i = 0; i < n; i++) {
        ASSERT_EQ((buf[i / 8] >> (i % 8)) & 1, m.bits[first + i] ? 1 : 0);
      }
      copy.deserialize(first, n, buf);
    }
    ASSERT_TRUE(copy == hb);
    ASSERT_NO_FATAL_FAILURE(expect_same(copy, m));
  }
  // Partial range: only the bits inside it are replaced.
  HBitmap a(1000, 0);
  a.set_all();
  std::vector<uint8_t> zero(8, 0);
  a.deserialize(64, 40, zero);
  EXPECT_EQ(a.count(), 1000u - 40);
  EXPECT_EQ(a.next_clear_bit(0, 1000), 64u);
  EXPECT_EQ(a.next_set_bit(64, 1000), 104u);
}

// Digests QEMU 7.2 reports (x-debug-block-dirty-bitmap-sha256) for a qcow2
// of 10487296 bytes after qemu-io writes 0+4k, 1M+64k, 10M+1k, 5000000+777.
TEST(HBitmap, Sha256MatchesQemu) {
  const uint64_t size = 10487296;
  HBitmap empty(size, 16);
  EXPECT_EQ(empty.sha256_hex(), "9d908ecfb6b256def8b49a7c504e6c889c4b0e41fe6ce3e01863dd7b61a20aa0");
  for (uint32_t g : {16u, 9u}) {
    HBitmap hb(size, g);
    hb.set(0, 4096);
    hb.set(1 << 20, 65536);
    hb.set(10 << 20, 1024);
    hb.set(5000000, 777);
    EXPECT_EQ(hb.sha256_hex(),
              g == 16 ? "39c678ffcbece821ad359685c14a99ae6fbcb7575e57f434500a6287e8be7c1e"
                      : "de369442e3ece6e4b15b1d33d6da70d3300fae029714de78719cf042f08e4b4b");
    EXPECT_EQ(hb.count_bytes(), g == 16 ? 262144u : 72192u);
  }
  // A zero-sized bitmap hashes one zero word.
  EXPECT_EQ(HBitmap(0, 16).sha256_hex(),
            "af5570f5a1810b7af78caf4bc70a660f0df51e42baf91d4de5b2328de0e83dfc");
}

TEST(HBitmap, SparseExtentsOnOneTebibyte) {
  HBitmap hb(uint64_t{1} << 40, 16);
  std::mt19937_64 rng(9);
  Model dummy(0, 16);
  std::vector<uint64_t> granules;
  for (int i = 0; i < 1000; i++) granules.push_back(rng() % hb.bits());
  std::sort(granules.begin(), granules.end());
  granules.erase(std::unique(granules.begin(), granules.end()), granules.end());
  for (uint64_t g : granules) hb.set_bits(g, 1);
  std::vector<uint64_t> seen;
  hb.for_each_dirty_extent([&](const BitmapExtent& e) {
    for (uint64_t o = e.offset; o < e.offset + e.length; o += hb.granularity()) {
      seen.push_back(o >> 16);
    }
  });
  EXPECT_EQ(seen, granules);
  EXPECT_EQ(hb.count(), granules.size());
}

}  // namespace
}  // namespace strata

namespace strata {
namespace {

// Copies and moves keep the write path's fast check on their own words.
TEST(HBitmap, CopiesAndMovesAreIndependent) {
  HBitmap a(1 << 20, 12);
  a.set(0, 4096);
  HBitmap copy(a);
  copy.set(8192, 4096);  // slow path on the copy's words
  copy.set(8192, 4096);  // fast path: must see the copy's words
  EXPECT_TRUE(copy.get(8192));
  EXPECT_FALSE(a.get(8192));
  HBitmap assigned(4096, 9);
  assigned = a;
  a.reset_all();
  assigned.set(0, 4096);
  EXPECT_TRUE(assigned.get(0));
  EXPECT_EQ(assigned.count(), 1u);
  HBitmap moved(std::move(assigned));
  moved.set(65536, 1);
  EXPECT_TRUE(moved.word_all_set(0, 1));
  EXPECT_EQ(moved.count(), 2u);
  copy.truncate(2 << 20);
  copy.set(1 << 20, 4096);
  EXPECT_TRUE(copy.word_all_set((1 << 20) / 4096 / 64, 1));
  EXPECT_EQ(copy.count(), 3u);
}

}  // namespace
}  // namespace strata
