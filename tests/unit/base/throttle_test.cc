// ThrottleState: QEMU's leaky buckets on a fake clock. A client sends as
// soon as wait_ns() allows; the bytes or operations it got through in a
// window must match the limits (average, burst rate and burst length,
// iops-size), and check_throttle_config() must refuse what QEMU refuses,
// in QEMU's words.
#include "base/throttle.h"

#include <gtest/gtest.h>

#include <vector>

namespace strata {
namespace {

constexpr uint64_t kSec = 1000000000;
constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kKiB = 1 << 10;

using B = BucketType;

// Sends requests of `bytes` in direction `dir` as fast as allowed from
// `now` until `end`; returns the times they went.
std::vector<uint64_t> send_until(ThrottleState& ts, uint64_t& now, uint64_t end, uint64_t bytes,
                                 ThrottleDirection dir = ThrottleDirection::kWrite) {
  std::vector<uint64_t> sent;
  for (;;) {
    uint64_t wait = ts.wait_ns(dir, now);
    if (now + wait >= end) break;
    now += wait;
    if (wait == 0) {
      ts.account(dir, bytes);
      sent.push_back(now);
    }
  }
  now = end;
  return sent;
}

uint64_t count_between(const std::vector<uint64_t>& times, uint64_t from, uint64_t to) {
  uint64_t n = 0;
  for (uint64_t t : times) n += (t >= from && t < to);
  return n;
}

ThrottleConfig with(B bucket, uint64_t avg, uint64_t max = 0, uint64_t length = 1) {
  ThrottleConfig c;
  c.bucket(bucket).avg = avg;
  c.bucket(bucket).max = max;
  c.bucket(bucket).burst_length = length;
  return c;
}

TEST(ThrottleState, NoLimitsNeverWait) {
  ThrottleState ts;
  ts.configure(ThrottleConfig{}, 0);
  for (int i = 0; i < 1000; i++) {
    EXPECT_EQ(ts.wait_ns(ThrottleDirection::kRead, 0), 0u);
    ts.account(ThrottleDirection::kRead, 1 << 30);
  }
  EXPECT_FALSE(ThrottleConfig{}.enabled());
  EXPECT_TRUE(with(B::kBpsRead, 1).enabled());
}

TEST(ThrottleState, AverageRateHoldsOverEveryWindow) {
  ThrottleState ts;
  uint64_t now = 3 * kSec;
  ts.configure(with(B::kBpsTotal, 1 * kMiB), now);
  auto sent = send_until(ts, now, now + 20 * kSec, 64 * kKiB);
  // The first tenth of a second's worth goes at once, then 1 MiB/s.
  uint64_t start = 3 * kSec;
  EXPECT_EQ(count_between(sent, start, start + 1), 2u);  // 64 KiB, then 128 KiB > 102.4 KiB
  for (uint64_t s = 1; s < 19; s++) {
    uint64_t n = count_between(sent, start + s * kSec, start + (s + 1) * kSec);
    EXPECT_GE(n, 15u) << "second " << s;
    EXPECT_LE(n, 17u) << "second " << s;
  }
  uint64_t total = sent.size() * 64 * kKiB;
  EXPECT_LE(total, 20 * kMiB + kMiB / 10 + 64 * kKiB);
  EXPECT_GE(total, 20 * kMiB - 64 * kKiB);
}

TEST(ThrottleState, IopsLimitCountsRequests) {
  ThrottleState ts;
  uint64_t now = 0;
  ts.configure(with(B::kOpsTotal, 50), now);
  auto sent = send_until(ts, now, 10 * kSec, 512, ThrottleDirection::kRead);
  // 50 per second plus the tenth-of-a-second allowance (5 requests).
  EXPECT_GE(sent.size(), 499u);
  EXPECT_LE(sent.size(), 506u);
}

TEST(ThrottleState, BurstRunsAtMaxForBurstLengthThenAverage) {
  ThrottleState ts;
  uint64_t now = 0;
  // 1 MiB/s on average, bursts at 4 MiB/s of up to 2 s (8 MiB).
  ts.configure(with(B::kBpsWrite, 1 * kMiB, 4 * kMiB, 2), now);
  auto sent = send_until(ts, now, 30 * kSec, 64 * kKiB);
  auto mib_in = [&](uint64_t from, uint64_t to) {
    return static_cast<double>(count_between(sent, from, to) * 64 * kKiB) / kMiB;
  };
  // The burst: 4 MiB/s (its own tenth-of-a-second allowance first).
  EXPECT_NEAR(mib_in(0, kSec), 4.4, 0.2);
  // The burst ends when the main bucket holds 8 MiB: 0.4 + (4 - 1) t = 8
  // at t = 2.5 s.
  EXPECT_NEAR(mib_in(kSec, 2 * kSec), 4.0, 0.2);
  // Then the average.
  for (uint64_t s = 4; s < 29; s++) EXPECT_NEAR(mib_in(s * kSec, (s + 1) * kSec), 1.0, 0.1);
  // Over the run: what leaked at the average plus the full bucket.
  EXPECT_NEAR(mib_in(0, 30 * kSec), 30.0 + 8.0, 0.2);
}

TEST(ThrottleState, BurstIsRefilledByIdleTime) {
  ThrottleState ts;
  uint64_t now = 0;
  ts.configure(with(B::kOpsTotal, 10, 100, 1), now);
  // A burst of max * length = 100 requests goes at once (plus nothing).
  uint64_t at_once = 0;
  while (ts.wait_ns(ThrottleDirection::kRead, now) == 0) {
    ts.account(ThrottleDirection::kRead, 512);
    at_once++;
  }
  EXPECT_EQ(at_once, 101u);  // a request goes while the level is not above 100
  // Idle for 10 s: the bucket leaked empty, the burst is available again.
  now += 10 * kSec + kSec / 10;
  at_once = 0;
  while (ts.wait_ns(ThrottleDirection::kRead, now) == 0) {
    ts.account(ThrottleDirection::kRead, 512);
    at_once++;
  }
  EXPECT_EQ(at_once, 101u);
}

TEST(ThrottleState, IopsSizeCountsLargeRequestsAsSeveral) {
  ThrottleState ts;
  ThrottleConfig c = with(B::kOpsTotal, 10);
  c.op_size = 4096;
  ts.configure(c, 0);
  ts.account(ThrottleDirection::kWrite, 64 * kKiB);  // 16 operations
  EXPECT_DOUBLE_EQ(ts.level(B::kOpsTotal), 16.0);
  // 16 - 1 (a tenth of 10/s) extra operations leak in 1.5 s.
  EXPECT_EQ(ts.wait_ns(ThrottleDirection::kWrite, 0), 1500000000u);
  // Smaller requests still count as one.
  ts.account(ThrottleDirection::kWrite, 512);
  EXPECT_DOUBLE_EQ(ts.level(B::kOpsTotal), 17.0);
}

TEST(ThrottleState, ReadAndWriteBucketsAreSeparate) {
  ThrottleState ts;
  ThrottleConfig c = with(B::kBpsWrite, 1 * kKiB);
  c.bucket(B::kBpsRead).avg = 1 * kMiB;
  ts.configure(c, 0);
  ts.account(ThrottleDirection::kWrite, 64 * kKiB);
  EXPECT_GT(ts.wait_ns(ThrottleDirection::kWrite, 0), 60 * kSec);
  EXPECT_EQ(ts.wait_ns(ThrottleDirection::kRead, 0), 0u);
  EXPECT_DOUBLE_EQ(ts.level(B::kBpsTotal), 64.0 * kKiB);
}

TEST(ThrottleState, ConfigureEmptiesTheBuckets) {
  ThrottleState ts;
  ts.configure(with(B::kBpsTotal, 1 * kKiB), 0);
  ts.account(ThrottleDirection::kRead, 1 * kMiB);
  EXPECT_GT(ts.wait_ns(ThrottleDirection::kRead, 0), 0u);
  ts.configure(with(B::kBpsTotal, 1 * kKiB), 5);
  EXPECT_EQ(ts.wait_ns(ThrottleDirection::kRead, 5), 0u);
}

TEST(ThrottleState, ClockGoingBackwardsLeaksNothing) {
  ThrottleState ts;
  ts.configure(with(B::kBpsTotal, 1 * kKiB), 10 * kSec);
  ts.account(ThrottleDirection::kRead, 2 * kKiB);
  uint64_t w = ts.wait_ns(ThrottleDirection::kRead, 10 * kSec);
  EXPECT_EQ(ts.wait_ns(ThrottleDirection::kRead, 5 * kSec), w);
}

std::string message_of(const ThrottleConfig& c) {
  auto r = check_throttle_config(c);
  return r ? "" : r.error().message;
}

TEST(ThrottleConfigCheck, QemuRulesAndMessages) {
  EXPECT_EQ(message_of(ThrottleConfig{}), "");
  ThrottleConfig c = with(B::kBpsTotal, 10);
  c.bucket(B::kBpsRead).avg = 5;
  EXPECT_EQ(message_of(c),
            "bps/iops/max total values and read/write values cannot be used at the same time");
  c = with(B::kOpsTotal, 10, 20);
  c.bucket(B::kOpsWrite).max = 30;
  c.bucket(B::kOpsWrite).avg = 10;
  EXPECT_EQ(message_of(c),
            "bps/iops/max total values and read/write values cannot be used at the same time");
  c = with(B::kBpsTotal, 10);
  c.op_size = 4096;
  EXPECT_EQ(message_of(c), "iops size requires an iops value to be set");
  EXPECT_EQ(message_of(with(B::kBpsWrite, kThrottleValueMax + 1)),
            "bps/iops/max values must be within [0, 1000000000000000]");
  EXPECT_EQ(message_of(with(B::kBpsWrite, kThrottleValueMax)), "");
  EXPECT_EQ(message_of(with(B::kBpsWrite, 10, 20, 0)), "the burst length cannot be 0");
  EXPECT_EQ(message_of(with(B::kBpsWrite, 10, 0, 2)), "burst length set without burst rate");
  EXPECT_EQ(message_of(with(B::kBpsWrite, 10, 20, kThrottleValueMax / 20 + 1)),
            "burst length too high for this burst rate");
  EXPECT_EQ(message_of(with(B::kBpsWrite, 10, 20, kThrottleValueMax / 20)), "");
  EXPECT_EQ(message_of(with(B::kOpsRead, 0, 20)),
            "bps_max/iops_max require corresponding bps/iops values");
  EXPECT_EQ(message_of(with(B::kOpsRead, 30, 20)),
            "bps_max/iops_max cannot be lower than bps/iops");
}

}  // namespace
}  // namespace strata
