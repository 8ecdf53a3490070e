// Helpers for splice-read tests: read a range of a drive's node through
// Child::co_splice_read into a pipe and through co_preadv, and compare.
#pragma once

#include <gtest/gtest.h>

#include <random>
#include <utility>
#include <vector>

#include "base/pipe.h"
#include "block/core/node.h"
#include "strata/drive.h"
#include "strata/engine.h"

namespace strata::testing {

// The largest range the helpers read (unprivileged pipes reach 1 MiB).
constexpr uint64_t kMaxSpliceRange = 1024 * 1024;

// Splices [offset, offset + bytes) of the drive's node into a fresh pipe and
// returns what came out, or the error (with the pipe's fill level).
struct SpliceOutcome {
  Result<void> result;
  size_t buffered = 0;
  std::vector<uint8_t> data;
};

inline SpliceOutcome splice_range(Drive& drive, uint64_t offset, uint64_t bytes) {
  SpliceOutcome out;
  auto pipe = Pipe::create(kMaxSpliceRange);
  if (!pipe) {
    out.result = pipe.error();
    return out;
  }
  EXPECT_GE((*pipe)->capacity(), bytes);
  out.result = drive.engine().run(drive.edge()->co_splice_read(offset, bytes, **pipe));
  out.buffered = (*pipe)->buffered();
  if (out.result) {
    EXPECT_EQ(out.buffered, bytes);
    out.data.resize(bytes);
    EXPECT_TRUE((*pipe)->drain_into(out.data.data(), bytes));
  }
  return out;
}

// Expects the splice read of the range to deliver what co_preadv reads.
inline void expect_splice_equals_read(Drive& drive, uint64_t offset, uint64_t bytes) {
  SCOPED_TRACE("range " + std::to_string(offset) + "+" + std::to_string(bytes));
  auto spliced = splice_range(drive, offset, bytes);
  ASSERT_TRUE(spliced.result) << spliced.result.error().message;
  std::vector<uint8_t> read(bytes);
  ASSERT_TRUE(drive.read(offset, read));
  EXPECT_TRUE(spliced.data == read);
}

// Ranges of a node of `size` bytes: around every multiple of `boundary`
// (crossing it, starting and ending on it, unaligned by a few bytes), the
// last bytes, and `random` random ranges, all at most kMaxSpliceRange long.
inline std::vector<std::pair<uint64_t, uint64_t>> test_ranges(uint64_t size, uint64_t boundary,
                                                              int random, unsigned seed = 1) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  auto add = [&](uint64_t off, uint64_t len) {
    if (off >= size) return;
    len = std::min({len, size - off, kMaxSpliceRange});
    if (len) out.emplace_back(off, len);
  };
  for (uint64_t b = boundary; b < size; b += boundary) {
    add(b - 1, 2);
    add(b - 777, boundary + 1554);
    add(b, boundary);
    add(b - boundary / 2, 3 * boundary);
  }
  add(size - 1, 1);
  add(size - 5000, 5000);
  std::mt19937_64 rng(seed);
  for (int i = 0; i < random; i++) {
    uint64_t off = rng() % size;
    add(off, 1 + rng() % (kMaxSpliceRange / 2));
  }
  return out;
}

inline void expect_splice_equals_read_everywhere(Drive& drive, uint64_t boundary, int random) {
  for (auto [off, len] : test_ranges(drive.size(), boundary, random)) {
    expect_splice_equals_read(drive, off, len);
  }
}

}  // namespace strata::testing
