// HBitmap: levels of 64-bit words; see hbitmap.h for the contract.
#include "block/bitmap/hbitmap.h"

#include <openssl/evp.h>

#include <algorithm>
#include <bit>
#include <cassert>
#include <cstring>

namespace strata {

namespace {

constexpr uint64_t kAllOnes = ~uint64_t{0};

uint64_t words_for(uint64_t nbits) {
  return std::max<uint64_t>((nbits + 63) / 64, 1);
}

// Bits [lo, hi] (0..63, lo <= hi) of one word.
uint64_t word_mask(unsigned lo, unsigned hi) {
  uint64_t upper = hi == 63 ? kAllOnes : ((uint64_t{1} << (hi + 1)) - 1);
  return upper & (kAllOnes << lo);
}

// Mask of the bits of word `w` that fall in the bit range [first, last].
uint64_t mask_in_word(uint64_t w, uint64_t first, uint64_t last) {
  unsigned lo = w == first / 64 ? first % 64 : 0;
  unsigned hi = w == last / 64 ? last % 64 : 63;
  return word_mask(lo, hi);
}

uint64_t granules_for(uint64_t size, uint32_t gran_bits) {
  uint64_t mask = (uint64_t{1} << gran_bits) - 1;
  return (size >> gran_bits) + ((size & mask) != 0);
}

}  // namespace

HBitmap::HBitmap(uint64_t size, uint32_t granularity_bits)
    : size_(size), gran_bits_(granularity_bits), nbits_(granules_for(size, granularity_bits)) {
  assert(granularity_bits < 63);
  allocate_levels();
}

HBitmap::HBitmap(const HBitmap& other)
    : size_(other.size_),
      gran_bits_(other.gran_bits_),
      nbits_(other.nbits_),
      count_(other.count_),
      levels_(other.levels_) {
  bottom_words_ = levels_.back().data();
}

HBitmap& HBitmap::operator=(const HBitmap& other) {
  if (this != &other) {
    size_ = other.size_;
    gran_bits_ = other.gran_bits_;
    nbits_ = other.nbits_;
    count_ = other.count_;
    levels_ = other.levels_;
    bottom_words_ = levels_.back().data();
  }
  return *this;
}

void HBitmap::allocate_levels() {
  std::vector<Level> bottom_up;
  uint64_t words = words_for(nbits_);
  bottom_up.emplace_back(words, 0);
  while (words > 1) {
    words = words_for(words);
    bottom_up.emplace_back(words, 0);
  }
  levels_.assign(std::make_move_iterator(bottom_up.rbegin()),
                 std::make_move_iterator(bottom_up.rend()));
  bottom_words_ = levels_.back().data();
}

// Words [first, last] of level `lv` gained bits, so they are non-zero now.
void HBitmap::mark_nonempty(size_t lv, uint64_t first, uint64_t last) {
  while (lv > 0) {
    Level& parent = levels_[lv - 1];
    bool changed = false;
    for (uint64_t w = first / 64; w <= last / 64; w++) {
      uint64_t mask = mask_in_word(w, first, last);
      if ((parent[w] & mask) != mask) {
        parent[w] |= mask;
        changed = true;
      }
    }
    if (!changed) return;  // every ancestor is already set
    first /= 64;
    last /= 64;
    lv--;
  }
}

// Words [first, last] of level `lv` changed arbitrarily: recompute the bits
// that summarize them, level by level.
void HBitmap::refresh_upper(size_t lv, uint64_t first, uint64_t last) {
  while (lv > 0) {
    const Level& child = levels_[lv];
    Level& parent = levels_[lv - 1];
    bool changed = false;
    for (uint64_t pw = first / 64; pw <= last / 64; pw++) {
      uint64_t mask = mask_in_word(pw, first, last);
      uint64_t value = 0;
      for (uint64_t bits = mask; bits != 0; bits &= bits - 1) {
        unsigned b = std::countr_zero(bits);
        if (child[pw * 64 + b] != 0) value |= uint64_t{1} << b;
      }
      uint64_t updated = (parent[pw] & ~mask) | value;
      if (updated != parent[pw]) {
        parent[pw] = updated;
        changed = true;
      }
    }
    if (!changed) return;
    first /= 64;
    last /= 64;
    lv--;
  }
}

std::optional<uint64_t> HBitmap::find_set(size_t lv, uint64_t from) const {
  const Level& level = levels_[lv];
  if (from >= level.size() * 64) return std::nullopt;
  uint64_t w = from / 64;
  uint64_t word = level[w] & (kAllOnes << (from % 64));
  if (word != 0) return w * 64 + std::countr_zero(word);
  if (lv == 0) {
    // The top level is one word: nothing after it.
    return std::nullopt;
  }
  auto next_word = find_set(lv - 1, w + 1);
  if (!next_word) return std::nullopt;
  return *next_word * 64 + std::countr_zero(level[*next_word]);
}

void HBitmap::set_bits(uint64_t first, uint64_t n) {
  if (first >= nbits_ || n == 0) return;
  uint64_t last = first + std::min(n, nbits_ - first) - 1;
  Level& words = bottom();
  for (uint64_t w = first / 64; w <= last / 64; w++) {
    uint64_t old = words[w];
    words[w] |= mask_in_word(w, first, last);
    count_ += std::popcount(words[w]) - std::popcount(old);
  }
  mark_nonempty(levels_.size() - 1, first / 64, last / 64);
}

void HBitmap::reset_bits(uint64_t first, uint64_t n) {
  if (first >= nbits_ || n == 0) return;
  uint64_t last = first + std::min(n, nbits_ - first) - 1;
  Level& words = bottom();
  bool changed = false;
  for (uint64_t w = first / 64; w <= last / 64; w++) {
    uint64_t cleared = words[w] & mask_in_word(w, first, last);
    if (cleared == 0) continue;
    words[w] &= ~cleared;
    count_ -= std::popcount(cleared);
    changed = true;
  }
  if (changed) refresh_upper(levels_.size() - 1, first / 64, last / 64);
}

bool HBitmap::get_bit(uint64_t i) const {
  if (i >= nbits_) return false;
  return (bottom()[i / 64] >> (i % 64)) & 1;
}

std::optional<uint64_t> HBitmap::next_set_bit(uint64_t from, uint64_t end) const {
  end = std::min(end, nbits_);
  if (from >= end) return std::nullopt;
  auto found = find_set(levels_.size() - 1, from);
  if (!found || *found >= end) return std::nullopt;
  return found;
}

std::optional<uint64_t> HBitmap::next_clear_bit(uint64_t from, uint64_t end) const {
  end = std::min(end, nbits_);
  if (from >= end) return std::nullopt;
  const Level& words = bottom();
  uint64_t w = from / 64;
  uint64_t clear = ~words[w] & (kAllOnes << (from % 64));
  while (clear == 0) {
    if (++w * 64 >= end) return std::nullopt;
    clear = ~words[w];
  }
  uint64_t found = w * 64 + std::countr_zero(clear);
  if (found >= end) return std::nullopt;
  return found;
}

void HBitmap::set_range(uint64_t offset, uint64_t bytes) {
  if (offset >= size_ || bytes == 0) return;
  uint64_t end = offset + std::min(bytes, size_ - offset);
  uint64_t first = offset >> gran_bits_;
  uint64_t last = (end - 1) >> gran_bits_;
  set_bits(first, last - first + 1);
}

void HBitmap::reset(uint64_t offset, uint64_t bytes) {
  if (offset >= size_ || bytes == 0) return;
  uint64_t end = offset + std::min(bytes, size_ - offset);
  uint64_t first = granules_for(offset, gran_bits_);
  uint64_t last_excl = end == size_ ? nbits_ : end >> gran_bits_;
  if (first < last_excl) reset_bits(first, last_excl - first);
}

void HBitmap::set_all() {
  set_bits(0, nbits_);
}

void HBitmap::reset_all() {
  for (Level& level : levels_) std::fill(level.begin(), level.end(), 0);
  count_ = 0;
}

bool HBitmap::get(uint64_t offset) const {
  return offset < size_ && get_bit(offset >> gran_bits_);
}

std::optional<uint64_t> HBitmap::next_dirty(uint64_t offset, uint64_t end) const {
  end = std::min(end, size_);
  if (offset >= end) return std::nullopt;
  auto bit = next_set_bit(offset >> gran_bits_, granules_for(end, gran_bits_));
  if (!bit) return std::nullopt;
  return std::max(offset, *bit << gran_bits_);
}

std::optional<uint64_t> HBitmap::next_clean(uint64_t offset, uint64_t end) const {
  end = std::min(end, size_);
  if (offset >= end) return std::nullopt;
  auto bit = next_clear_bit(offset >> gran_bits_, granules_for(end, gran_bits_));
  if (!bit) return std::nullopt;
  return std::max(offset, *bit << gran_bits_);
}

std::optional<BitmapExtent> HBitmap::next_dirty_extent(uint64_t offset, uint64_t end) const {
  end = std::min(end, size_);
  auto start = next_dirty(offset, end);
  if (!start) return std::nullopt;
  uint64_t end_bit = granules_for(end, gran_bits_);
  auto clean = next_clear_bit(*start >> gran_bits_, end_bit);
  uint64_t stop = clean ? std::min(*clean << gran_bits_, end) : end;
  return BitmapExtent{*start, stop - *start};
}

void HBitmap::for_each_dirty_extent(const std::function<void(const BitmapExtent&)>& fn,
                                    uint64_t offset, uint64_t end) const {
  end = std::min(end, size_);
  while (offset < end) {
    auto extent = next_dirty_extent(offset, end);
    if (!extent) return;
    fn(*extent);
    offset = extent->offset + extent->length;
  }
}

void HBitmap::truncate(uint64_t new_size) {
  uint64_t new_bits = granules_for(new_size, gran_bits_);
  if (new_bits < nbits_) reset_bits(new_bits, nbits_ - new_bits);
  Level old_bottom = std::move(bottom());
  size_ = new_size;
  nbits_ = new_bits;
  allocate_levels();
  size_t keep = std::min(old_bottom.size(), bottom().size());
  std::copy_n(old_bottom.begin(), keep, bottom().begin());
  refresh_upper(levels_.size() - 1, 0, bottom().size() - 1);
}

void HBitmap::merge(const HBitmap& src) {
  if (src.gran_bits_ != gran_bits_) {
    src.for_each_dirty_extent([this](const BitmapExtent& e) { set(e.offset, e.length); });
    return;
  }
  // Same granularity: OR the non-zero words, found through the upper levels.
  const Level& from = src.bottom();
  Level& to = bottom();
  uint64_t last_bit = nbits_ == 0 ? 0 : nbits_ - 1;
  for (auto w = src.next_nonzero_word(0); w && *w * 64 < nbits_;
       w = src.next_nonzero_word(*w + 1)) {
    uint64_t old = to[*w];
    to[*w] |= from[*w] & mask_in_word(*w, *w * 64, last_bit);
    count_ += std::popcount(to[*w]) - std::popcount(old);
    if (to[*w] != 0) mark_nonempty(levels_.size() - 1, *w, *w);
  }
}

std::optional<uint64_t> HBitmap::next_nonzero_word(uint64_t from) const {
  if (levels_.size() == 1) {
    if (from == 0 && bottom()[0] != 0) return 0;
    return std::nullopt;
  }
  return find_set(levels_.size() - 2, from);
}

bool HBitmap::operator==(const HBitmap& other) const {
  return size_ == other.size_ && gran_bits_ == other.gran_bits_ && bottom() == other.bottom();
}

void HBitmap::serialize(uint64_t first, uint64_t n, std::span<uint8_t> out) const {
  assert(first % 64 == 0 && out.size() >= serialized_bytes(n));
  uint64_t nbytes = serialized_bytes(n);
  std::memset(out.data(), 0, nbytes);
  uint64_t end = std::min(first + n, nbits_);
  if (first >= end) return;
  const Level& words = bottom();
  auto bit = next_set_bit(first, end);
  while (bit) {
    uint64_t w = *bit / 64;
    uint64_t word = words[w] & mask_in_word(w, first, end - 1);
    uint64_t byte_pos = (w * 64 - first) / 8;
    for (unsigned b = 0; b < 8 && byte_pos + b < nbytes; b++) {
      out[byte_pos + b] = static_cast<uint8_t>(word >> (8 * b));
    }
    bit = next_set_bit((w + 1) * 64, end);
  }
}

void HBitmap::deserialize(uint64_t first, uint64_t n, std::span<const uint8_t> in) {
  assert(first % 64 == 0 && in.size() >= serialized_bytes(n));
  uint64_t end = std::min(first + n, nbits_);
  if (first >= end) return;
  Level& words = bottom();
  for (uint64_t w = first / 64; w <= (end - 1) / 64; w++) {
    uint64_t byte_pos = (w * 64 - first) / 8;
    uint64_t value = 0;
    for (unsigned b = 0; b < 8 && byte_pos + b < in.size(); b++) {
      value |= uint64_t{in[byte_pos + b]} << (8 * b);
    }
    uint64_t mask = mask_in_word(w, first, end - 1);
    uint64_t old = words[w];
    words[w] = (old & ~mask) | (value & mask);
    count_ += std::popcount(words[w]) - std::popcount(old);
  }
  refresh_upper(levels_.size() - 1, first / 64, (end - 1) / 64);
}

std::string HBitmap::sha256_hex() const {
  const Level& words = bottom();
  std::vector<uint8_t> le;
  const void* data = words.data();
  if constexpr (std::endian::native != std::endian::little) {
    le.resize(words.size() * 8);
    for (size_t w = 0; w < words.size(); w++) {
      for (unsigned b = 0; b < 8; b++) le[w * 8 + b] = static_cast<uint8_t>(words[w] >> (8 * b));
    }
    data = le.data();
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  EVP_Digest(data, words.size() * 8, digest, &digest_len, EVP_sha256(), nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned i = 0; i < digest_len; i++) {
    hex += kHex[digest[i] >> 4];
    hex += kHex[digest[i] & 15];
  }
  return hex;
}

size_t HBitmap::memory_bytes() const {
  size_t total = 0;
  for (const Level& level : levels_) total += level.capacity() * sizeof(uint64_t);
  return total;
}

}  // namespace strata
