// ThrottleState: QEMU's I/O throttling arithmetic (util/throttle.c), six
// leaky buckets that turn a stream of reads and writes into waiting times.
//
// Buckets: bytes and operations, each for reads + writes ("total"), reads
// alone and writes alone. Each has an average rate `avg` (units per second,
// 0: no limit), an optional burst rate `max` and a burst length in seconds
// `burst_length` (1 by default). A request first asks wait_ns(): the
// buckets leak at `avg` units per second since the last call, and the
// request must wait while any bucket of its direction holds more than its
// allowance: avg / 10 without a burst rate, max * burst_length with one
// (the burst), and while the burst bucket, which leaks at `max`, holds more
// than max / 10. When it may go, account() pours its bytes and operations
// into the buckets of its direction; with `op_size` set, a request larger
// than op_size counts as size / op_size operations.
//
// Contract: times are nanoseconds of a monotonic clock chosen by the owner
// (tests pass a fake one); wait_ns() never moves time backwards.
// check_throttle_config() refuses what QEMU's throttle_is_valid() refuses,
// with its messages. configure() empties the buckets (as QEMU does when the
// limits change).
// Thread rules: none; a plain value owned by one throttle group.
#pragma once

#include <array>
#include <cstdint>

#include "strata/result.h"

namespace strata {

enum class ThrottleDirection { kRead = 0, kWrite = 1 };

enum class BucketType { kBpsTotal, kBpsRead, kBpsWrite, kOpsTotal, kOpsRead, kOpsWrite };
constexpr size_t kBucketCount = 6;

// QEMU's THROTTLE_VALUE_MAX: the largest rate (and max * burst_length).
constexpr uint64_t kThrottleValueMax = 1000000000000000ULL;

struct LeakyBucket {
  uint64_t avg = 0;           // units per second; 0: no limit
  uint64_t max = 0;           // burst rate; 0: none
  uint64_t burst_length = 1;  // seconds a burst at `max` may last
  double level = 0;           // units poured and not leaked yet
  double burst_level = 0;     // the same, leaking at `max` (burst_length > 1)
};

struct ThrottleConfig {
  std::array<LeakyBucket, kBucketCount> buckets;
  uint64_t op_size = 0;  // bytes one operation stands for; 0: every request is one

  LeakyBucket& bucket(BucketType t) { return buckets[static_cast<size_t>(t)]; }
  const LeakyBucket& bucket(BucketType t) const { return buckets[static_cast<size_t>(t)]; }
  // True if any bucket has a rate.
  bool enabled() const;
};

// QEMU's throttle_is_valid(): the first violated rule, in its wording.
Result<void> check_throttle_config(const ThrottleConfig& config);

class ThrottleState {
 public:
  // Replaces the limits and empties the buckets; `now` starts the leaking.
  void configure(const ThrottleConfig& config, uint64_t now);
  // The limits (bucket levels are internal state).
  const ThrottleConfig& config() const { return config_; }

  // Leaks the buckets up to `now`, then says how long a request of `dir`
  // must wait before it may go (0: now).
  uint64_t wait_ns(ThrottleDirection dir, uint64_t now);
  // Pours a request of `bytes` going now into the buckets of `dir`.
  void account(ThrottleDirection dir, uint64_t bytes);

  // A bucket's current level (for tests).
  double level(BucketType t) const { return config_.bucket(t).level; }

 private:
  void leak(uint64_t now);

  ThrottleConfig config_;
  uint64_t previous_leak_ = 0;
};

}  // namespace strata
