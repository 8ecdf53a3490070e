#include "base/throttle.h"

#include <algorithm>

namespace strata {

namespace {

constexpr double kNsPerSecond = 1e9;

// The buckets a request of each direction waits for and fills.
constexpr BucketType kBytes[2][2] = {{BucketType::kBpsTotal, BucketType::kBpsRead},
                                     {BucketType::kBpsTotal, BucketType::kBpsWrite}};
constexpr BucketType kOps[2][2] = {{BucketType::kOpsTotal, BucketType::kOpsRead},
                                   {BucketType::kOpsTotal, BucketType::kOpsWrite}};

size_t index_of(ThrottleDirection dir) {
  return static_cast<size_t>(dir);
}

void leak_bucket(LeakyBucket& b, uint64_t delta_ns) {
  double seconds = static_cast<double>(delta_ns) / kNsPerSecond;
  b.level = std::max(b.level - static_cast<double>(b.avg) * seconds, 0.0);
  if (b.burst_length > 1) {
    b.burst_level = std::max(b.burst_level - static_cast<double>(b.max) * seconds, 0.0);
  }
}

// Time for `extra` units to leak at `rate` units per second (capped at
// about 146 years, so that it fits a timer).
uint64_t time_to_leak(double extra, double rate) {
  constexpr uint64_t kLongest = uint64_t{1} << 62;
  double ns = extra * kNsPerSecond / rate;
  return ns >= static_cast<double>(kLongest) ? kLongest : static_cast<uint64_t>(ns);
}

uint64_t bucket_wait(const LeakyBucket& b) {
  if (b.avg == 0) return 0;
  // Without a burst rate, a tenth of a second's worth passes at once so
  // that not every other request waits; with one, the whole burst does.
  double allowance = b.max == 0 ? static_cast<double>(b.avg) / 10
                                : static_cast<double>(b.max) * static_cast<double>(b.burst_length);
  if (b.level > allowance) return time_to_leak(b.level - allowance, static_cast<double>(b.avg));
  if (b.burst_length > 1) {
    double burst_allowance = static_cast<double>(b.max) / 10;
    if (b.burst_level > burst_allowance) {
      return time_to_leak(b.burst_level - burst_allowance, static_cast<double>(b.max));
    }
  }
  return 0;
}

void pour(LeakyBucket& b, double units) {
  b.level += units;
  if (b.burst_length > 1) b.burst_level += units;
}

bool conflict(const ThrottleConfig& c, BucketType total, BucketType read, BucketType write,
              uint64_t LeakyBucket::*field) {
  return c.bucket(total).*field && (c.bucket(read).*field || c.bucket(write).*field);
}

Result<void> check_bucket(const LeakyBucket& b) {
  if (b.avg > kThrottleValueMax || b.max > kThrottleValueMax) {
    return Error{EINVAL, "bps/iops/max values must be within [0, " +
                             std::to_string(kThrottleValueMax) + "]"};
  }
  if (b.burst_length == 0) return Error{EINVAL, "the burst length cannot be 0"};
  if (b.burst_length > 1 && b.max == 0) {
    return Error{EINVAL, "burst length set without burst rate"};
  }
  if (b.max && b.burst_length > kThrottleValueMax / b.max) {
    return Error{EINVAL, "burst length too high for this burst rate"};
  }
  if (b.max && !b.avg) {
    return Error{EINVAL, "bps_max/iops_max require corresponding bps/iops values"};
  }
  if (b.max && b.max < b.avg) {
    return Error{EINVAL, "bps_max/iops_max cannot be lower than bps/iops"};
  }
  return {};
}

}  // namespace

bool ThrottleConfig::enabled() const {
  return std::any_of(buckets.begin(), buckets.end(), [](const LeakyBucket& b) { return b.avg; });
}

Result<void> check_throttle_config(const ThrottleConfig& c) {
  using B = BucketType;
  if (conflict(c, B::kBpsTotal, B::kBpsRead, B::kBpsWrite, &LeakyBucket::avg) ||
      conflict(c, B::kOpsTotal, B::kOpsRead, B::kOpsWrite, &LeakyBucket::avg) ||
      conflict(c, B::kBpsTotal, B::kBpsRead, B::kBpsWrite, &LeakyBucket::max) ||
      conflict(c, B::kOpsTotal, B::kOpsRead, B::kOpsWrite, &LeakyBucket::max)) {
    return Error{EINVAL,
                 "bps/iops/max total values and read/write values cannot be used at the same time"};
  }
  if (c.op_size && !c.bucket(B::kOpsTotal).avg && !c.bucket(B::kOpsRead).avg &&
      !c.bucket(B::kOpsWrite).avg) {
    return Error{EINVAL, "iops size requires an iops value to be set"};
  }
  for (const LeakyBucket& b : c.buckets) STRATA_TRY(check_bucket(b));
  return {};
}

void ThrottleState::configure(const ThrottleConfig& config, uint64_t now) {
  config_ = config;
  for (LeakyBucket& b : config_.buckets) b.level = b.burst_level = 0;
  previous_leak_ = now;
}

void ThrottleState::leak(uint64_t now) {
  if (now <= previous_leak_) return;
  uint64_t delta = now - previous_leak_;
  previous_leak_ = now;
  for (LeakyBucket& b : config_.buckets) leak_bucket(b, delta);
}

uint64_t ThrottleState::wait_ns(ThrottleDirection dir, uint64_t now) {
  leak(now);
  uint64_t wait = 0;
  for (BucketType t : kBytes[index_of(dir)]) wait = std::max(wait, bucket_wait(config_.bucket(t)));
  for (BucketType t : kOps[index_of(dir)]) wait = std::max(wait, bucket_wait(config_.bucket(t)));
  return wait;
}

void ThrottleState::account(ThrottleDirection dir, uint64_t bytes) {
  double units = 1.0;
  if (config_.op_size && bytes > config_.op_size) {
    units = static_cast<double>(bytes) / static_cast<double>(config_.op_size);
  }
  for (BucketType t : kBytes[index_of(dir)]) pour(config_.bucket(t), static_cast<double>(bytes));
  for (BucketType t : kOps[index_of(dir)]) pour(config_.bucket(t), units);
}

}  // namespace strata
