#include "base/timer.h"

#include <uv.h>

namespace strata {

Timer::Timer(Loop& loop) : loop_(loop) {
  auto* t = new uv_timer_t;
  uv_timer_init(loop.uv(), t);
  t->data = this;
  handle_ = t;
}

Timer::~Timer() {
  auto* t = static_cast<uv_timer_t*>(handle_);
  uv_timer_stop(t);
  t->data = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(t),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
}

void Timer::start(uint64_t ns, std::function<void()> fn) {
  auto* t = static_cast<uv_timer_t*>(handle_);
  fn_ = std::move(fn);
  pending_ = true;
  // Count from now, not from the loop's cached time (see Loop::co_sleep).
  uv_update_time(loop_.uv());
  uint64_t ms = (ns + 999999) / 1000000;
  uv_timer_start(
      t, [](uv_timer_t* h) { on_expire(h); }, ms, 0);
}

void Timer::stop() {
  uv_timer_stop(static_cast<uv_timer_t*>(handle_));
  pending_ = false;
  fn_ = nullptr;
}

void Timer::on_expire(void* handle) {
  auto* self = static_cast<Timer*>(static_cast<uv_timer_t*>(handle)->data);
  if (!self) return;
  self->pending_ = false;
  auto fn = std::move(self->fn_);
  self->fn_ = nullptr;
  if (fn) fn();
}

}  // namespace strata
