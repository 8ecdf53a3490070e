// HBitmap: a hierarchical bitmap with a granularity, the storage of a dirty
// bitmap.
//
// Contract: the bitmap covers `size()` bytes split into granules of
// 2^granularity_bits bytes; bit i stands for bytes [i << g, (i+1) << g).
// The bottom level holds one bit per granule in 64-bit words (bit i is bit
// i % 64 of word i / 64, the layout QEMU hashes and qcow2 stores in
// little-endian bytes); each level above holds one bit per word of the level
// below, set exactly when that word is non-zero, up to a single top word.
// So "next dirty" and "next dirty extent" cost O(levels) per answer however
// sparse the bitmap is, count() is kept incrementally, and the upper levels
// add less than 1/63 to the memory of one bit per granule.
// Byte-range operations: set() marks every granule the range touches;
// reset() clears only granules the range covers fully (a range reaching the
// end of the bitmap covers the last, partial granule). Bits past the last
// granule are always zero.
// Thread rules: none; a plain value, not synchronized.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace strata {

// A dirty range in bytes.
struct BitmapExtent {
  uint64_t offset = 0;
  uint64_t length = 0;
  bool operator==(const BitmapExtent&) const = default;
};

class HBitmap {
 public:
  // `granularity_bits` in [0, 63).
  HBitmap(uint64_t size, uint32_t granularity_bits);
  HBitmap(const HBitmap& other);
  HBitmap& operator=(const HBitmap& other);
  HBitmap(HBitmap&&) noexcept = default;
  HBitmap& operator=(HBitmap&&) noexcept = default;

  uint64_t size() const { return size_; }
  uint32_t granularity_bits() const { return gran_bits_; }
  uint64_t granularity() const { return uint64_t{1} << gran_bits_; }
  // Number of granules (bits).
  uint64_t bits() const { return nbits_; }
  // Number of dirty granules.
  uint64_t count() const { return count_; }
  // Dirty bytes as QEMU reports them: count() granules, the last one whole.
  uint64_t count_bytes() const { return count_ << gran_bits_; }
  bool empty() const { return count_ == 0; }

  // Byte-range operations (see the contract for rounding). set() returns
  // at once, inline, when the range's granules are already dirty: the common
  // case on the write path.
  void set(uint64_t offset, uint64_t bytes) {
    if (offset < size_ && bytes != 0 && bytes <= size_ - offset) {
      uint64_t first = offset >> gran_bits_;
      uint64_t last = (offset + bytes - 1) >> gran_bits_;
      if (first / 64 == last / 64) {
        uint64_t mask = (~uint64_t{0} >> (63 - last % 64)) & (~uint64_t{0} << (first % 64));
        if ((bottom_words_[first / 64] & mask) == mask) return;
      }
    }
    set_range(offset, bytes);
  }
  // The write path's test for a range inside one bottom word: are the
  // granules of `mask` in word `word` all dirty already? BitmapSet::mark
  // computes the word and mask once for every bitmap of a granularity.
  bool word_all_set(uint64_t word, uint64_t mask) const {
    return (bottom_words_[word] & mask) == mask;
  }
  void reset(uint64_t offset, uint64_t bytes);
  void set_all();
  void reset_all();
  bool get(uint64_t offset) const;
  // First dirty byte in [offset, end) (the start of a dirty granule, or
  // `offset` itself when its granule is dirty).
  std::optional<uint64_t> next_dirty(uint64_t offset, uint64_t end = UINT64_MAX) const;
  std::optional<uint64_t> next_clean(uint64_t offset, uint64_t end = UINT64_MAX) const;
  // The first dirty extent that starts at or after `offset` (or contains
  // it), clipped to [offset, min(end, size())).
  std::optional<BitmapExtent> next_dirty_extent(uint64_t offset, uint64_t end = UINT64_MAX) const;
  // Calls `fn` for every maximal dirty extent in [offset, end), in order.
  void for_each_dirty_extent(const std::function<void(const BitmapExtent&)>& fn,
                             uint64_t offset = 0, uint64_t end = UINT64_MAX) const;
  // Grows (new granules clean) or shrinks (granules past the end dropped).
  void truncate(uint64_t new_size);
  // this |= src, with any granularities: every byte dirty in `src` (within
  // this bitmap's size) becomes dirty here.
  void merge(const HBitmap& src);
  // Same bits and geometry.
  bool operator==(const HBitmap& other) const;

  // Bit-level operations, on granule indexes; ranges are clipped to bits().
  void set_bits(uint64_t first, uint64_t n);
  void reset_bits(uint64_t first, uint64_t n);
  bool get_bit(uint64_t i) const;
  std::optional<uint64_t> next_set_bit(uint64_t from, uint64_t end) const;
  std::optional<uint64_t> next_clear_bit(uint64_t from, uint64_t end) const;
  bool any_set(uint64_t first, uint64_t n) const {
    return next_set_bit(first, first + n).has_value();
  }

  // Serialization in qcow2's layout: bit i of the range is bit i % 8 of byte
  // i / 8. `first` must be a multiple of 64; `out`/`in` hold ceil(n / 8)
  // bytes. Serializing writes zeroes past bits(); deserializing replaces the
  // bits of the range (bits past bits() are ignored).
  static uint64_t serialized_bytes(uint64_t n) { return (n + 7) / 8; }
  void serialize(uint64_t first, uint64_t n, std::span<uint8_t> out) const;
  void deserialize(uint64_t first, uint64_t n, std::span<const uint8_t> in);

  // SHA-256 (lowercase hex) of the bottom level as QEMU's
  // x-debug-block-dirty-bitmap-sha256 computes it: max(1, ceil(bits()/64))
  // 64-bit words, each in little-endian byte order.
  std::string sha256_hex() const;
  // Heap bytes used by all levels.
  size_t memory_bytes() const;

 private:
  using Level = std::vector<uint64_t>;
  void set_range(uint64_t offset, uint64_t bytes);
  Level& bottom() { return levels_.back(); }
  const Level& bottom() const { return levels_.back(); }
  void allocate_levels();
  // Upper-level maintenance after words [first, last] of level `lv` changed.
  void mark_nonempty(size_t lv, uint64_t first, uint64_t last);
  void refresh_upper(size_t lv, uint64_t first, uint64_t last);
  // First set bit >= from in level `lv`, or nullopt.
  std::optional<uint64_t> find_set(size_t lv, uint64_t from) const;
  // First non-zero bottom word at or after word `from`.
  std::optional<uint64_t> next_nonzero_word(uint64_t from) const;

  uint64_t size_;
  uint32_t gran_bits_;
  // levels_.back().data(), kept next to size_ and gran_bits_ so that the
  // write path's check touches one cache line of this object and one word.
  // Moves keep it valid (the buffer moves); copies and allocate_levels()
  // set it.
  uint64_t* bottom_words_ = nullptr;
  uint64_t nbits_;
  uint64_t count_ = 0;
  std::vector<Level> levels_;  // levels_[0] is the top (one word)
};

}  // namespace strata
