// ZeroMap: where a copy job's target is known to read as zeroes, so that
// zeroes of the source need not be written there (blockdev-mirror's
// `target-is-zero`: the user says the whole target reads as zeroes when the
// job starts).
//
// Contract: granule-based and conservative. A range is known zero only if
// every granule it touches is; forget() drops every granule a range
// touches, and is called before anything but zeroes is written to the
// target there (data, a discard, a write that may fail half way). Writing
// zeroes keeps what is known.
// Thread rules: loop-thread only (the job's).
#pragma once

#include <algorithm>
#include <cstdint>

#include "block/bitmap/hbitmap.h"

namespace strata {

class ZeroMap {
 public:
  // All of [0, size) known to read as zeroes.
  ZeroMap(uint64_t size, uint32_t granularity_bits) : known_(size, granularity_bits) {
    known_.set_all();
  }

  bool reads_zero(uint64_t offset, uint64_t bytes) const {
    if (bytes == 0) return true;
    if (offset + bytes > known_.size()) return false;
    return !known_.next_clean(offset, offset + bytes);
  }

  void forget(uint64_t offset, uint64_t bytes) {
    if (bytes == 0 || offset >= known_.size()) return;
    uint64_t g = known_.granularity();
    uint64_t start = offset / g * g;
    uint64_t end = std::min((offset + bytes + g - 1) / g * g, known_.size());
    known_.reset(start, end - start);
  }

 private:
  HBitmap known_;
};

}  // namespace strata
