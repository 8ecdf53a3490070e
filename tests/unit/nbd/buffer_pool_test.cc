// BufferPool: buffers are reused by size class, and what the pool keeps for
// reuse stays under its bound.
#include "nbd/buffer_pool.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace strata::nbd {
namespace {

TEST(NbdBufferPool, RoundsUpToSizeClassesAndReuses) {
  BufferPool pool(1 << 20);
  AlignedBuffer a = pool.take(5000);
  ASSERT_EQ(a.size(), 8192u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a.data()) % 4096, 0u);
  uint8_t* first = a.data();
  pool.give(std::move(a));
  EXPECT_EQ(pool.cached_bytes(), 8192u);
  AlignedBuffer b = pool.take(8192);
  EXPECT_EQ(b.data(), first);
  EXPECT_EQ(pool.cached_bytes(), 0u);
  AlignedBuffer c = pool.take(1);
  EXPECT_EQ(c.size(), 4096u);
  EXPECT_EQ(pool.take(0).size(), 0u);
}

TEST(NbdBufferPool, KeepsNoMoreThanItsBound) {
  BufferPool pool(256 * 1024);
  std::vector<AlignedBuffer> held;
  for (int i = 0; i < 8; i++) held.push_back(pool.take(64 * 1024));
  for (auto& b : held) pool.give(std::move(b));
  EXPECT_EQ(pool.cached_bytes(), 256u * 1024);
  // Buffers not made by the pool (odd sizes) are freed, not kept.
  pool.give(AlignedBuffer(12345));
  EXPECT_EQ(pool.cached_bytes(), 256u * 1024);
}

TEST(NbdBufferPool, HugeRequestsBypassThePool) {
  BufferPool pool(1u << 30);
  AlignedBuffer big = pool.take((64u << 20) + 1);
  EXPECT_EQ(big.size(), (64u << 20) + 1);
  pool.give(std::move(big));
  EXPECT_EQ(pool.cached_bytes(), 0u);
}

}  // namespace
}  // namespace strata::nbd
