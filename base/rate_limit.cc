#include "base/rate_limit.h"

#include "base/loop.h"

namespace strata {

RateLimiter::RateLimiter(Clock clock) : clock_(std::move(clock)) {}

uint64_t RateLimiter::now() const {
  return clock_ ? clock_() : Loop::now_ns();
}

void RateLimiter::set_speed(uint64_t bytes_per_second) {
  speed_ = bytes_per_second;
}

// Drops sends that left the window (t - 1 s, t].
void RateLimiter::expire(uint64_t t) {
  while (!log_.empty() && log_.front().time + kWindowNs <= t) {
    in_window_ -= log_.front().bytes;
    log_.pop_front();
  }
}

uint64_t RateLimiter::delay_ns(uint64_t bytes) {
  if (speed_ == 0) return 0;
  uint64_t t = now();
  expire(t);
  // Walk the log from the oldest send: once the sends still in the window
  // plus this one fit (or none is left), the window has moved far enough.
  uint64_t remaining = in_window_;
  for (const Sent& s : log_) {
    if (remaining + bytes <= speed_) break;
    remaining -= s.bytes;
    if (remaining == 0 || remaining + bytes <= speed_) return s.time + kWindowNs - t;
  }
  return 0;
}

void RateLimiter::account(uint64_t bytes) {
  if (speed_ == 0 || bytes == 0) return;
  uint64_t t = now();
  expire(t);
  log_.push_back({t, bytes});
  in_window_ += bytes;
}

}  // namespace strata
