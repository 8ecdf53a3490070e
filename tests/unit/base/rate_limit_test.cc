// RateLimiter: the rate holds over every one-second window, not only per
// slice; a chunk larger than the rate passes alone.
#include "base/rate_limit.h"

#include <gtest/gtest.h>

#include <vector>

namespace strata {
namespace {

constexpr uint64_t kSec = RateLimiter::kWindowNs;
constexpr uint64_t kMs = kSec / 1000;

// Sends `n` chunks as fast as the limiter allows on a fake clock; returns
// the send times.
std::vector<uint64_t> send_all(RateLimiter& limiter, uint64_t& now, int n, uint64_t bytes) {
  std::vector<uint64_t> times;
  for (int i = 0; i < n; i++) {
    now += limiter.delay_ns(bytes);
    EXPECT_EQ(limiter.delay_ns(bytes), 0u);
    limiter.account(bytes);
    times.push_back(now);
    now += 7 * kMs;  // some work between chunks
  }
  return times;
}

// The most bytes sent within any window [t, t + 1 s).
uint64_t worst_window(const std::vector<uint64_t>& times, uint64_t bytes) {
  uint64_t worst = 0;
  for (size_t i = 0; i < times.size(); i++) {
    uint64_t sum = 0;
    for (size_t j = i; j < times.size() && times[j] < times[i] + kSec; j++) sum += bytes;
    worst = std::max(worst, sum);
  }
  return worst;
}

TEST(RateLimiter, UnlimitedNeverWaits) {
  uint64_t now = 0;
  RateLimiter limiter([&] { return now; });
  for (int i = 0; i < 100; i++) {
    EXPECT_EQ(limiter.delay_ns(1 << 30), 0u);
    limiter.account(1 << 30);
  }
}

TEST(RateLimiter, HoldsOverEverySlidingWindow) {
  uint64_t now = 5 * kSec;
  RateLimiter limiter([&] { return now; });
  limiter.set_speed(10000);
  auto times = send_all(limiter, now, 200, 3000);
  EXPECT_LE(worst_window(times, 3000), 10000u);
  // And it is not starved: 200 chunks of 3000 at 10000/s take about 60 s
  // (three chunks per second).
  EXPECT_LT(times.back() - times.front(), 70 * kSec);
}

TEST(RateLimiter, BurstAtASliceBoundaryIsStillLimited) {
  // A per-slice limiter lets a full slice's worth through at the end of one
  // slice and again at the start of the next; a sliding window does not.
  uint64_t now = 0;
  RateLimiter limiter([&] { return now; });
  limiter.set_speed(1000);
  now = 900 * kMs;
  EXPECT_EQ(limiter.delay_ns(1000), 0u);
  limiter.account(1000);
  now = 1100 * kMs;
  EXPECT_EQ(limiter.delay_ns(1000), 800 * kMs);  // until 1.9 s
}

TEST(RateLimiter, ChunkLargerThanTheRatePassesAlone) {
  uint64_t now = kSec;
  RateLimiter limiter([&] { return now; });
  limiter.set_speed(1000);
  EXPECT_EQ(limiter.delay_ns(5000), 0u);
  limiter.account(5000);
  EXPECT_EQ(limiter.delay_ns(5000), kSec);
  EXPECT_EQ(limiter.delay_ns(1), kSec);
  now += kSec;
  EXPECT_EQ(limiter.delay_ns(5000), 0u);
}

TEST(RateLimiter, WaitsOnlyForWhatMustLeaveTheWindow) {
  uint64_t now = 0;
  RateLimiter limiter([&] { return now; });
  limiter.set_speed(300);
  for (int i = 0; i < 3; i++) {
    limiter.account(100);
    now += 100 * kMs;
  }
  // At 0.3 s the window holds 300: the next 100 waits for the first send
  // (t = 0) to leave, the next 200 for the first two.
  EXPECT_EQ(limiter.delay_ns(100), 700 * kMs);
  EXPECT_EQ(limiter.delay_ns(200), 800 * kMs);
}

TEST(RateLimiter, SlowerSpeedAppliesToWhatWasSent) {
  uint64_t now = 0;
  RateLimiter limiter([&] { return now; });
  limiter.set_speed(1000);
  limiter.account(1000);
  limiter.set_speed(500);
  EXPECT_EQ(limiter.delay_ns(100), kSec);
}

}  // namespace
}  // namespace strata
