#include "nbd/buffer_pool.h"

#include <bit>

namespace strata::nbd {

size_t BufferPool::class_of(size_t size) {
  size_t shift = size <= (size_t{1} << kMinShift) ? kMinShift : std::bit_width(size - 1);
  return shift - kMinShift;
}

AlignedBuffer BufferPool::take(size_t size) {
  if (size == 0) return AlignedBuffer();
  size_t c = class_of(size);
  if (c >= kClasses) return AlignedBuffer(size);
  auto& list = free_[c];
  if (!list.empty()) {
    AlignedBuffer buf = std::move(list.back());
    list.pop_back();
    cached_ -= buf.size();
    return buf;
  }
  return AlignedBuffer(size_t{1} << (c + kMinShift));
}

void BufferPool::give(AlignedBuffer buf) {
  size_t size = buf.size();
  if (size == 0 || cached_ + size > max_cached_) return;
  size_t c = class_of(size);
  // Only whole size-class buffers made by take() are kept.
  if (c >= kClasses || size != (size_t{1} << (c + kMinShift))) return;
  cached_ += size;
  free_[c].push_back(std::move(buf));
}

}  // namespace strata::nbd
