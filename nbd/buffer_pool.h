// BufferPool: reusable aligned buffers for request payloads and READ data.
//
// Contract: take(n) returns a buffer of at least n bytes (4 KiB aligned),
// reused from earlier give() calls when one of the same size class is free.
// Size classes are powers of two from 4 KiB, so a buffer is at most twice the
// size asked for. give() keeps a buffer for reuse while the pool holds less
// than `max_cached` bytes and frees it otherwise, so the memory a pool keeps
// is bounded whatever sizes clients ask for. Large buffers come from mmap in
// the allocator; reusing them spares a map, an unmap and a page fault per
// page on every request.
// Thread rules: none; owned and used by one connection on its loop thread.
#pragma once

#include <array>
#include <cstddef>
#include <vector>

#include "strata/iovec.h"

namespace strata::nbd {

class BufferPool {
 public:
  explicit BufferPool(size_t max_cached) : max_cached_(max_cached) {}
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  AlignedBuffer take(size_t size);
  void give(AlignedBuffer buf);
  size_t cached_bytes() const { return cached_; }

 private:
  static constexpr size_t kMinShift = 12;  // 4 KiB
  static constexpr size_t kClasses = 15;   // up to 64 MiB
  static size_t class_of(size_t size);

  size_t max_cached_;
  size_t cached_ = 0;
  std::array<std::vector<AlignedBuffer>, kClasses> free_;
};

}  // namespace strata::nbd
