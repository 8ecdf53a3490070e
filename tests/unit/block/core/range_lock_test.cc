#include "block/core/range_lock.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "base/loop.h"

namespace strata {
namespace {

class RangeLockTest : public ::testing::Test {
 protected:
  Loop loop_;
  RangeLock lock_{loop_};
  std::vector<std::string> order_;

  Task<void> co_hold(std::string name, uint64_t off, uint64_t len, bool excl, uint64_t ms) {
    auto g = co_await lock_.co_lock(off, len, excl);
    order_.push_back(name + "+");
    co_await loop_.co_sleep(ms);
    order_.push_back(name + "-");
  }
};

TEST_F(RangeLockTest, SharedEntriesOverlapFreely) {
  TaskGroup g(loop_);
  g.spawn(co_hold("a", 0, 100, false, 5));
  g.spawn(co_hold("b", 50, 100, false, 1));
  loop_.run(g.co_join());
  EXPECT_EQ(order_, (std::vector<std::string>{"a+", "b+", "b-", "a-"}));
}

TEST_F(RangeLockTest, ExclusiveWaitsForOlderOverlappingEntries) {
  TaskGroup g(loop_);
  g.spawn(co_hold("a", 0, 100, false, 5));
  g.spawn(co_hold("x", 99, 10, true, 1));
  g.spawn(co_hold("far", 200, 10, true, 1));  // no overlap: no wait
  loop_.run(g.co_join());
  EXPECT_EQ(order_, (std::vector<std::string>{"a+", "far+", "far-", "a-", "x+", "x-"}));
}

TEST_F(RangeLockTest, LaterSharedEntriesDoNotPassAnOlderExclusiveOne) {
  TaskGroup g(loop_);
  g.spawn(co_hold("a", 0, 100, false, 5));
  g.spawn(co_hold("x", 0, 100, true, 1));
  g.spawn(co_hold("b", 0, 100, false, 1));
  loop_.run(g.co_join());
  EXPECT_EQ(order_, (std::vector<std::string>{"a+", "a-", "x+", "x-", "b+", "b-"}));
}

TEST_F(RangeLockTest, EmptyRangesAndTryLock) {
  auto held = lock_.try_lock(0, 4096, true);
  ASSERT_TRUE(held.held());
  EXPECT_FALSE(lock_.try_lock(4095, 1, false).held());
  EXPECT_TRUE(lock_.try_lock(4096, 1, true).held());
  EXPECT_TRUE(lock_.try_lock(100, 0, true).held());  // overlaps nothing
  EXPECT_TRUE(lock_.conflicts(0, 1, false));
  EXPECT_FALSE(lock_.conflicts(8192, 1, true));
  held.release();
  EXPECT_TRUE(lock_.empty());
  EXPECT_TRUE(lock_.try_lock(0, 4096, false).held());
}

TEST_F(RangeLockTest, MakeExclusiveHoldsBackLaterEntries) {
  RangeLock::Entry first(lock_, 0, 512, false);
  RangeLock::Entry second(lock_, 0, 512, false);
  EXPECT_FALSE(second.must_wait());
  first.make_exclusive();
  EXPECT_TRUE(second.must_wait());
  EXPECT_FALSE(first.must_wait());  // only older entries count
}

}  // namespace
}  // namespace strata
