// Timer: a one-shot, restartable timer on a Loop, for sleeps that must be
// cut short (a job's rate-limit sleep is woken early by pause and cancel).
//
// Contract: start() arms the timer (replacing any pending expiry); the
// callback runs once on the loop thread when it expires, unless stop() or a
// new start() came first. Destroying a Timer stops it; the libuv handle is
// closed and freed by the loop afterwards, so a Timer may die before its
// Loop runs again (but not after the Loop is destroyed).
// Thread rules: loop-thread only.
#pragma once

#include <cstdint>
#include <functional>

#include "base/loop.h"

namespace strata {

class Timer {
 public:
  explicit Timer(Loop& loop);
  ~Timer();
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  // Calls `fn` once after at least `ns` nanoseconds (rounded up to the
  // loop's millisecond resolution).
  void start(uint64_t ns, std::function<void()> fn);
  void stop();
  bool pending() const { return pending_; }

 private:
  static void on_expire(void* handle);
  Loop& loop_;
  void* handle_ = nullptr;  // uv_timer_t*
  std::function<void()> fn_;
  bool pending_ = false;
};

}  // namespace strata
