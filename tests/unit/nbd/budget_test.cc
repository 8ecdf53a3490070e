// The NBD server's memory budget: what fits is granted at once, waiters are
// served in arrival order, an account over its fair share goes behind the
// others, an account holding nothing always goes on with a floor (so a
// client whose replies are never read cannot stop the others), and a
// connection that closes stops waiting.
#include "nbd/budget.h"

#include <gtest/gtest.h>

#include <optional>

namespace strata::nbd {
namespace {

// One co_acquire in flight; `granted` is set when it returns.
struct Request {
  std::optional<size_t> granted;
};

Task<void> co_ask(MemoryBudget* b, MemoryBudget::Account* a, size_t bytes, Request* r) {
  r->granted = co_await b->co_acquire(*a, bytes);
}

class BudgetTest : public ::testing::Test {
 protected:
  // Runs posted wake-ups.
  void settle() { loop_.run(loop_.co_sleep(1)); }
  // Each Request lives in the test body; the task keeps a pointer to it.
  void ask(MemoryBudget::Account& a, size_t bytes, Request* r) {
    loop_.spawn(co_ask(&budget_, &a, bytes, r));
  }

  Loop loop_;
  MemoryBudget budget_{loop_, 100, 10};
  MemoryBudget::Account a_, b_, c_;
};

TEST_F(BudgetTest, WhatFitsIsGrantedAtOnce) {
  EXPECT_TRUE(budget_.try_acquire(a_, 60));
  EXPECT_FALSE(budget_.try_acquire(b_, 50));
  Request r;
  ask(b_, 40, &r);
  ASSERT_TRUE(r.granted);
  EXPECT_EQ(*r.granted, 40u);
  EXPECT_EQ(budget_.used(), 100u);
  budget_.release(a_, 60);
  budget_.release(b_, 40);
  EXPECT_EQ(budget_.used(), 0u);
}

TEST_F(BudgetTest, WaitersAreGrantedInArrivalOrder) {
  ASSERT_TRUE(budget_.try_acquire(a_, 60));
  ASSERT_TRUE(budget_.try_acquire(b_, 10));
  ASSERT_TRUE(budget_.try_acquire(c_, 10));
  Request big, small;
  ask(b_, 50, &big);    // 80 + 50 does not fit
  ask(c_, 10, &small);  // would fit, but waits behind the larger request
  settle();
  EXPECT_FALSE(big.granted);
  EXPECT_FALSE(small.granted);
  EXPECT_EQ(budget_.waiting(), 2u);
  budget_.release(a_, 10);  // 70 + 50 still does not fit: both wait
  settle();
  EXPECT_FALSE(big.granted);
  EXPECT_FALSE(small.granted);
  budget_.release(a_, 50);
  settle();
  ASSERT_TRUE(big.granted && small.granted);
  EXPECT_EQ(*big.granted, 50u);
  EXPECT_EQ(*small.granted, 10u);
  EXPECT_EQ(budget_.used(), 80u);
  budget_.release(b_, 60);
  budget_.release(c_, 20);
}

TEST_F(BudgetTest, AnAccountOverItsFairShareGoesBehindTheOthers) {
  ASSERT_TRUE(budget_.try_acquire(a_, 70));
  ASSERT_TRUE(budget_.try_acquire(b_, 10));
  Request greedy, modest;
  ask(a_, 40, &greedy);  // a holds 70, over its share of 100 / 2
  ask(b_, 20, &modest);  // fits beside a's 70: not held up by a
  settle();
  EXPECT_FALSE(greedy.granted);
  ASSERT_TRUE(modest.granted);
  EXPECT_EQ(*modest.granted, 20u);
  budget_.release(b_, 30);
  budget_.release(a_, 70);
  settle();
  ASSERT_TRUE(greedy.granted);
  EXPECT_EQ(*greedy.granted, 40u);
  budget_.release(a_, 40);
}

// The budget is held by a client that never reads its replies (its bytes
// never come back). Another client still goes on, a floor at a time.
TEST_F(BudgetTest, AClientHoldingNothingGoesOnWithAFloor) {
  ASSERT_TRUE(budget_.try_acquire(a_, 100));  // never released
  Request first;
  ask(b_, 50, &first);
  ASSERT_TRUE(first.granted);  // not a wait: at once
  EXPECT_EQ(*first.granted, 10u);
  EXPECT_EQ(budget_.used(), 110u);  // past the total by one floor
  Request second;
  ask(b_, 50, &second);  // b holds its floor: it waits
  settle();
  EXPECT_FALSE(second.granted);
  budget_.release(b_, 10);  // b's piece is done: its next one goes
  settle();
  ASSERT_TRUE(second.granted);
  EXPECT_EQ(*second.granted, 10u);
  // A small request of an account holding nothing is granted whole.
  Request tiny;
  ask(c_, 4, &tiny);
  ASSERT_TRUE(tiny.granted);
  EXPECT_EQ(*tiny.granted, 4u);
  budget_.release(b_, 10);
  budget_.release(c_, 4);
  budget_.release(a_, 100);
}

// A floor is also granted to a waiter held up behind others.
TEST_F(BudgetTest, AFloorIsNotHeldUpByWaitersAhead) {
  ASSERT_TRUE(budget_.try_acquire(a_, 90));
  ASSERT_TRUE(budget_.try_acquire(b_, 5));
  ASSERT_TRUE(budget_.try_acquire(c_, 5));
  Request head, behind;
  ask(b_, 50, &head);    // under its share, does not fit: holds up the queue
  ask(c_, 50, &behind);  // behind it
  settle();
  EXPECT_FALSE(head.granted || behind.granted);
  budget_.release(c_, 5);  // c now holds nothing: a floor, past the head
  settle();
  EXPECT_FALSE(head.granted);
  ASSERT_TRUE(behind.granted);
  EXPECT_EQ(*behind.granted, 10u);
  budget_.cancel(b_);
  settle();
  budget_.release(a_, 90);
  budget_.release(b_, 5);
  budget_.release(c_, 10);
}

TEST_F(BudgetTest, CancelEndsAWait) {
  ASSERT_TRUE(budget_.try_acquire(a_, 100));
  Request held;
  ask(b_, 5, &held);  // a floor: b holds 5
  Request waiting;
  ask(b_, 50, &waiting);
  settle();
  EXPECT_FALSE(waiting.granted);
  budget_.cancel(b_);
  settle();
  ASSERT_TRUE(waiting.granted);
  EXPECT_EQ(*waiting.granted, 0u);
  EXPECT_EQ(budget_.waiting(), 0u);
  EXPECT_EQ(budget_.used(), 105u);
  budget_.release(b_, 5);
  budget_.release(a_, 100);
  EXPECT_EQ(budget_.used(), 0u);
}

}  // namespace
}  // namespace strata::nbd
