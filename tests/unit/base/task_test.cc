#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "base/cancel.h"
#include "base/gate.h"
#include "base/loop.h"
#include "base/sync.h"
#include "strata/result.h"

namespace strata {
namespace {

Task<int> co_add(int a, int b) {
  co_return a + b;
}

Task<int> co_sum_chain(int depth) {
  if (depth == 0) co_return 0;
  int below = co_await co_sum_chain(depth - 1);
  co_return below + 1;
}

TEST(TaskTest, ReturnsValueThroughAwait) {
  Loop loop;
  EXPECT_EQ(loop.run(co_add(2, 3)), 5);
}

TEST(TaskTest, NestedChainsComplete) {
  Loop loop;
  EXPECT_EQ(loop.run(co_sum_chain(1000)), 1000);
}

Task<int64_t> co_many_sequential(int n) {
  int64_t total = 0;
  for (int i = 0; i < n; i++) total += co_await co_add(i, 0);
  co_return total;
}

// A million children that complete without suspending: the awaiter continues
// in place each time, so the stack does not grow with the count (this would
// overflow a 8 MiB stack if each await nested a resume()).
TEST(TaskTest, LoopsOfSynchronousAwaitsRunInConstantStack) {
  Loop loop;
  EXPECT_EQ(loop.run(co_many_sequential(1000000)), int64_t{1000000} * 999999 / 2);
}

Task<int> co_async_child(Loop& loop, int v) {
  co_await loop.co_sleep(0);
  co_return v;
}

Task<int> co_mixed(Loop& loop) {
  int total = 0;
  for (int i = 0; i < 50; i++) {
    total += co_await co_add(i, 0);             // completes inline
    total += co_await co_async_child(loop, i);  // suspends, resumes us later
  }
  co_return total;
}

TEST(TaskTest, InlineAndSuspendingChildrenMix) {
  Loop loop;
  EXPECT_EQ(loop.run(co_mixed(loop)), 2 * (50 * 49 / 2));
}

TEST(TaskTest, UnawaitedTaskNeverRuns) {
  bool ran = false;
  auto make = [](bool* flag) -> Task<void> {
    *flag = true;
    co_return;
  };
  { Task<void> t = make(&ran); }
  EXPECT_FALSE(ran);
}

Task<Result<int>> co_fail_if(bool fail) {
  if (fail) co_return Error{ENOSPC, "no space"};
  co_return 7;
}

Task<Result<int>> co_propagate(bool fail) {
  STRATA_CO_TRY_ASSIGN(int v, co_await co_fail_if(fail));
  co_return v * 2;
}

TEST(TaskTest, ResultPropagatesErrors) {
  Loop loop;
  auto ok = loop.run(co_propagate(false));
  ASSERT_TRUE(ok);
  EXPECT_EQ(*ok, 14);
  auto bad = loop.run(co_propagate(true));
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, ENOSPC);
  EXPECT_EQ(bad.error().message, "no space");
}

Task<void> co_sleep_then_mark(Loop& loop, uint64_t ms, std::vector<int>* order, int id) {
  co_await loop.co_sleep(ms);
  order->push_back(id);
}

TEST(LoopTest, SleepsCompleteInDeadlineOrder) {
  Loop loop;
  std::vector<int> order;
  TaskGroup group(loop);
  group.spawn(co_sleep_then_mark(loop, 30, &order, 3));
  group.spawn(co_sleep_then_mark(loop, 10, &order, 1));
  group.spawn(co_sleep_then_mark(loop, 20, &order, 2));
  loop.run(group.co_join());
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
}

Task<int> co_offload_square(Loop& loop, int v) {
  auto main_thread = std::this_thread::get_id();
  int r = co_await loop.offload(
      [v, main_thread] { return std::this_thread::get_id() != main_thread ? v * v : -1; });
  EXPECT_TRUE(loop.on_loop_thread());
  co_return r;
}

TEST(LoopTest, OffloadRunsOnThePoolAndResumesOnTheLoop) {
  Loop loop;
  EXPECT_EQ(loop.run(co_offload_square(loop, 12)), 144);
}

Task<void> co_offload_blocking(Loop& loop, std::atomic<int>* concurrent, std::atomic<int>* peak) {
  co_await loop.offload([concurrent, peak] {
    int now = ++*concurrent;
    int seen = peak->load();
    while (now > seen && !peak->compare_exchange_weak(seen, now)) {
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    --*concurrent;
    return 0;
  });
}

TEST(LoopTest, ManyOffloadedCallsRunConcurrently) {
  Loop loop;
  std::atomic<int> concurrent{0}, peak{0};
  TaskGroup group(loop);
  for (int i = 0; i < 8; i++) group.spawn(co_offload_blocking(loop, &concurrent, &peak));
  loop.run(group.co_join());
  EXPECT_GE(peak.load(), 4);  // the loop thread never serialized them
}

TEST(LoopTest, PostFromAnotherThreadRunsOnTheLoop) {
  Loop loop;
  CoEvent done(loop);
  bool on_loop = false;
  std::thread t([&] {
    loop.post([&] {
      on_loop = loop.on_loop_thread();
      done.set();
    });
  });
  auto wait = [](CoEvent& e, Loop& l) -> Task<void> {
    // Keep the loop alive while the other thread posts.
    while (!e.is_set()) co_await l.co_sleep(1);
  };
  loop.run(wait(done, loop));
  t.join();
  EXPECT_TRUE(on_loop);
}

Task<void> co_hold_gate(Loop& loop, Gate& gate, uint64_t ms, int* finished) {
  Gate::Hold hold(gate);
  if (!hold.ok()) co_return;
  co_await loop.co_sleep(ms);
  (*finished)++;
}

Task<void> co_close_gate(Gate& gate, int* finished, int* seen_at_close) {
  co_await gate.co_close();
  *seen_at_close = *finished;
}

TEST(GateTest, CloseWaitsForWorkInFlightAndRefusesNewWork) {
  Loop loop;
  Gate gate(loop);
  int finished = 0, seen_at_close = -1;
  TaskGroup group(loop);
  group.spawn(co_hold_gate(loop, gate, 20, &finished));
  group.spawn(co_hold_gate(loop, gate, 40, &finished));
  group.spawn(co_close_gate(gate, &finished, &seen_at_close));
  loop.run(group.co_join());
  EXPECT_EQ(seen_at_close, 2);
  EXPECT_FALSE(gate.enter());
  gate.reopen();
  EXPECT_TRUE(gate.enter());
  gate.leave();
}

TEST(GateTest, DrainDoesNotClose) {
  Loop loop;
  Gate gate(loop);
  int finished = 0;
  TaskGroup group(loop);
  group.spawn(co_hold_gate(loop, gate, 10, &finished));
  loop.run(gate.co_drain());
  EXPECT_EQ(finished, 1);
  EXPECT_TRUE(gate.enter());
  gate.leave();
  loop.run(group.co_join());
}

TEST(CancelTokenTest, CallbacksRunOnceAndLateOnesRunAtOnce) {
  CancelToken token;
  int calls = 0;
  uint64_t id = token.on_cancel([&] { calls++; });
  uint64_t removed = token.on_cancel([&] { calls += 100; });
  token.remove(removed);
  EXPECT_FALSE(token.cancelled());
  token.cancel();
  token.cancel();
  EXPECT_TRUE(token.cancelled());
  EXPECT_EQ(calls, 1);
  token.on_cancel([&] { calls++; });
  EXPECT_EQ(calls, 2);
  (void)id;
}

Task<void> co_cancellable_wait(Loop& loop, CancelToken& token, CoEvent& wake, bool* cancelled) {
  uint64_t id = token.on_cancel([&wake] { wake.set(); });
  co_await wake.co_wait();
  token.remove(id);
  *cancelled = token.cancelled();
}

Task<void> co_cancel_later(Loop& loop, CancelToken& token) {
  co_await loop.co_sleep(5);
  token.cancel();
}

TEST(CancelTokenTest, CancelWakesAWaitingCoroutine) {
  Loop loop;
  CancelToken token;
  CoEvent wake(loop);
  bool cancelled = false;
  TaskGroup group(loop);
  group.spawn(co_cancellable_wait(loop, token, wake, &cancelled));
  group.spawn(co_cancel_later(loop, token));
  loop.run(group.co_join());
  EXPECT_TRUE(cancelled);
}

Task<void> co_locked_append(Loop& loop, CoMutex& mutex, std::vector<int>* log, int id) {
  auto guard = co_await mutex.co_scoped_lock();
  log->push_back(id);
  co_await loop.co_sleep(2);
  log->push_back(id);
}

TEST(CoMutexTest, HoldersDoNotInterleave) {
  Loop loop;
  CoMutex mutex(loop);
  std::vector<int> log;
  TaskGroup group(loop);
  for (int i = 0; i < 4; i++) group.spawn(co_locked_append(loop, mutex, &log, i));
  loop.run(group.co_join());
  ASSERT_EQ(log.size(), 8u);
  for (size_t i = 0; i < log.size(); i += 2) EXPECT_EQ(log[i], log[i + 1]);
  EXPECT_FALSE(mutex.locked());
}

}  // namespace
}  // namespace strata
