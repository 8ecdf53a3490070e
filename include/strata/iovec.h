// IoVec: a scatter-gather list of caller-owned buffers (like QEMU's QEMUIOVector).
//
// Contract: an IoVec never owns memory; the buffers it names must outlive every
// request that uses it. slice() returns a view of a byte range of the list.
// Lists of up to kInlineEntries buffers (nearly all requests) live inside
// the IoVec, so building, copying and slicing them does not allocate.
// AlignedBuffer owns memory aligned for O_DIRECT.
// Thread rules: plain values; a request's IoVec may be read on a pool thread
// while its coroutine waits.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

namespace strata {

class IoVec {
 public:
  IoVec() = default;
  IoVec(void* base, size_t len) { append(base, len); }
  explicit IoVec(std::span<uint8_t> buf) { append(buf.data(), buf.size()); }

  void append(void* base, size_t len) {
    if (len == 0) return;
    if (count_ < kInlineEntries) {
      inline_[count_] = {base, len};
    } else {
      if (count_ == kInlineEntries) heap_.assign(inline_, inline_ + kInlineEntries);
      heap_.push_back({base, len});
    }
    count_++;
    size_ += len;
  }
  void append(const IoVec& other) {
    for (const auto& v : other.entries()) append(v.iov_base, v.iov_len);
  }

  size_t size() const { return size_; }
  size_t count() const { return count_; }
  const struct iovec* data() const { return count_ <= kInlineEntries ? inline_ : heap_.data(); }
  // A view into this IoVec: valid while it lives and is not appended to.
  std::span<const struct iovec> entries() const { return {data(), count_}; }

  // A view of bytes [offset, offset + len) of this list.
  IoVec slice(size_t offset, size_t len) const {
    IoVec out;
    for (const auto& v : entries()) {
      if (len == 0) break;
      if (offset >= v.iov_len) {
        offset -= v.iov_len;
        continue;
      }
      size_t take = std::min(v.iov_len - offset, len);
      out.append(static_cast<uint8_t*>(v.iov_base) + offset, take);
      len -= take;
      offset = 0;
    }
    return out;
  }

  // Copies out of / into the list starting at `offset`; returns bytes copied.
  size_t copy_to(size_t offset, void* dst, size_t len) const {
    size_t done = 0;
    // Named: a range-for over slice(...).entries() would read a destroyed
    // temporary (entries() is a view into the IoVec).
    IoVec part = slice(offset, len);
    for (const auto& v : part.entries()) {
      std::memcpy(static_cast<uint8_t*>(dst) + done, v.iov_base, v.iov_len);
      done += v.iov_len;
    }
    return done;
  }
  size_t copy_from(size_t offset, const void* src, size_t len) const {
    size_t done = 0;
    IoVec part = slice(offset, len);
    for (const auto& v : part.entries()) {
      std::memcpy(v.iov_base, static_cast<const uint8_t*>(src) + done, v.iov_len);
      done += v.iov_len;
    }
    return done;
  }
  void fill(size_t offset, size_t len, uint8_t byte) const {
    IoVec part = slice(offset, len);
    for (const auto& v : part.entries()) std::memset(v.iov_base, byte, v.iov_len);
  }
  bool is_zero() const {
    for (const auto& v : entries()) {
      auto* p = static_cast<const uint8_t*>(v.iov_base);
      for (size_t i = 0; i < v.iov_len; i++) {
        if (p[i]) return false;
      }
    }
    return true;
  }

 private:
  static constexpr size_t kInlineEntries = 4;
  struct iovec inline_[kInlineEntries] = {};
  std::vector<struct iovec> heap_;  // all entries, once there are more than fit inline
  size_t count_ = 0;
  size_t size_ = 0;
};

// A heap buffer aligned to `alignment` (4096 by default, enough for O_DIRECT).
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t size, size_t alignment = 4096) : size_(size) {
    if (size == 0) return;
    size_t rounded = (size + alignment - 1) / alignment * alignment;
    data_ = static_cast<uint8_t*>(std::aligned_alloc(alignment, rounded));
    if (!data_) std::abort();
  }
  AlignedBuffer(AlignedBuffer&& o) noexcept : data_(o.data_), size_(o.size_) {
    o.data_ = nullptr;
    o.size_ = 0;
  }
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept {
    if (this != &o) {
      std::free(data_);
      data_ = o.data_;
      size_ = o.size_;
      o.data_ = nullptr;
      o.size_ = 0;
    }
    return *this;
  }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  ~AlignedBuffer() { std::free(data_); }

  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  std::span<uint8_t> span() const { return {data_, size_}; }
  IoVec iov() const { return IoVec(data_, size_); }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace strata
