// RateLimiter: keeps a byte rate over ANY one-second window, as the `speed`
// of block jobs promises.
//
// It keeps a log of what was sent in the last second (a sliding log, not
// fixed slices): a send of n bytes at time t is allowed when the bytes sent
// in (t - 1 s, t] plus n stay within the rate. Every one-second window is
// then within the rate, because the check made for the last send inside a
// window covered everything before it in that window. A single chunk larger
// than the rate passes alone, once nothing else was sent in the second
// before it (a job never stalls on a chunk it cannot split).
//
// Use: `delay_ns(n)` says how long to wait before sending n bytes (0: now);
// after waiting, `account(n)` records the send. The speed may change at any
// time; 0 means unlimited (no waiting, nothing logged).
//
// Contract: the clock is injectable (monotonic nanoseconds) so tests can
// drive time by hand; it defaults to Loop::now_ns.
// Thread rules: none; a plain object owned by one job on the loop thread.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>

namespace strata {

class RateLimiter {
 public:
  using Clock = std::function<uint64_t()>;
  static constexpr uint64_t kWindowNs = 1000000000;

  explicit RateLimiter(Clock clock = {});

  // Bytes per second; 0 = unlimited.
  void set_speed(uint64_t bytes_per_second);
  uint64_t speed() const { return speed_; }

  // Nanoseconds to wait from now before `bytes` may be sent.
  uint64_t delay_ns(uint64_t bytes);
  // Records `bytes` as sent now.
  void account(uint64_t bytes);

 private:
  void expire(uint64_t now);
  uint64_t now() const;

  Clock clock_;
  uint64_t speed_ = 0;
  struct Sent {
    uint64_t time;
    uint64_t bytes;
  };
  std::deque<Sent> log_;  // oldest first, all within the last window
  uint64_t in_window_ = 0;
};

}  // namespace strata
