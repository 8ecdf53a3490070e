// Loop::co_yield_now: a coroutine whose work never suspends still lets the
// loop run timers, I/O and other coroutines between its steps.
#include <gtest/gtest.h>

#include "base/loop.h"
#include "base/sync.h"

namespace strata {
namespace {

Task<void> co_busy(Loop& loop, int steps, int* done, const bool* other_ran, int* steps_before) {
  for (int i = 0; i < steps; i++) {
    if (*other_ran && *steps_before < 0) *steps_before = i;
    co_await loop.co_yield_now();
  }
  *done = steps;
}

Task<void> co_timer(Loop& loop, bool* ran) {
  co_await loop.co_sleep(0);
  *ran = true;
}

TEST(Yield, TimersRunBetweenYields) {
  Loop loop;
  int done = 0;
  bool timer_ran = false;
  int steps_before = -1;
  loop.spawn(co_timer(loop, &timer_ran));
  loop.run(co_busy(loop, 1000, &done, &timer_ran, &steps_before));
  EXPECT_EQ(done, 1000);
  EXPECT_TRUE(timer_ran);
  // The timer fired while the busy coroutine was still going.
  EXPECT_GE(steps_before, 0);
  EXPECT_LT(steps_before, 1000);
}

Task<void> co_counter(Loop& loop, int steps, std::vector<int>* order, int tag) {
  for (int i = 0; i < steps; i++) {
    order->push_back(tag);
    co_await loop.co_yield_now();
  }
}

TEST(Yield, YieldersTakeTurns) {
  Loop loop;
  std::vector<int> order;
  TaskGroup group(loop);
  group.spawn(co_counter(loop, 3, &order, 1));
  group.spawn(co_counter(loop, 3, &order, 2));
  loop.run(group.co_join());
  EXPECT_EQ(order, (std::vector<int>{1, 2, 1, 2, 1, 2}));
}

}  // namespace
}  // namespace strata
