// ThrottleGroup on a fake clock: members share the group's budget and are
// served in turn, requests of one member go in order, reads and writes
// queue apart, new limits apply to the requests that wait, and a member
// whose limits are disabled (a drained node) lets its requests go.
#include "block/filters/throttle_group.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <optional>

#include "base/loop.h"

namespace strata {
namespace {

constexpr uint64_t kSec = 1000000000;
constexpr uint64_t kKiB = 1 << 10;
constexpr uint64_t kMiB = 1 << 20;
constexpr auto kRead = ThrottleDirection::kRead;
constexpr auto kWrite = ThrottleDirection::kWrite;

// Time moves only when the test says so; timers fire when it passes them.
class FakeClock final : public ThrottleClock {
 public:
  explicit FakeClock(const uint64_t* now) : now_(now) {}
  uint64_t now_ns() const override { return *now_; }
  void start(ThrottleDirection dir, uint64_t delay_ns, std::function<void()> fn) override {
    timers_[index(dir)] = Armed{*now_ + delay_ns, std::move(fn)};
  }
  void stop(ThrottleDirection dir) override { timers_[index(dir)].reset(); }

  // The earliest deadline of an armed timer.
  std::optional<uint64_t> next_deadline() const {
    std::optional<uint64_t> out;
    for (const auto& t : timers_) {
      if (t && (!out || t->deadline < *out)) out = t->deadline;
    }
    return out;
  }
  // Fires the timers whose deadline passed.
  void fire_due() {
    for (auto& t : timers_) {
      if (!t || t->deadline > *now_) continue;
      auto fn = std::move(t->fn);
      t.reset();
      fn();
    }
  }

 private:
  struct Armed {
    uint64_t deadline;
    std::function<void()> fn;
  };
  static size_t index(ThrottleDirection dir) { return static_cast<size_t>(dir); }
  const uint64_t* now_;
  std::optional<Armed> timers_[2];
};

Task<void> co_settle(Loop& loop) {
  for (int i = 0; i < 50; i++) co_await loop.co_yield_now();
}

struct Done {
  int id;
  uint64_t at;
};

Task<void> co_request(ThrottleGroupMember& m, ThrottleDirection dir, uint64_t bytes, int id,
                      const uint64_t* now, std::vector<Done>* done) {
  co_await m.co_intercept(dir, bytes);
  done->push_back({id, *now});
}

class ThrottleGroupTest : public ::testing::Test {
 protected:
  ThrottleGroupTest() {
    auto clock = std::make_unique<FakeClock>(&now_);
    clock_ = clock.get();
    group_ = std::make_unique<ThrottleGroup>(loop_, "g", std::move(clock));
  }
  ~ThrottleGroupTest() override { EXPECT_EQ(group_->member_count(), 0u); }

  void limit(BucketType bucket, uint64_t avg) {
    ThrottleConfig c;
    c.bucket(bucket).avg = avg;
    ASSERT_TRUE(group_->set_config(c));
  }
  void send(ThrottleGroupMember& m, ThrottleDirection dir, uint64_t bytes, int id,
            std::vector<Done>& done) {
    loop_.spawn(co_request(m, dir, bytes, id, &now_, &done));
  }
  void settle() { loop_.run(co_settle(loop_)); }
  // Lets time pass up to `end`, firing timers on the way.
  void run_until(uint64_t end) {
    for (;;) {
      settle();
      auto next = clock_->next_deadline();
      if (!next || *next > end) break;
      now_ = std::max(now_, *next);
      clock_->fire_due();
    }
    now_ = end;
  }
  // Lets every queued request of `m` go, so the member can be destroyed.
  void release(ThrottleGroupMember& m) {
    m.disable_limits();
    settle();
  }

  Loop loop_;
  uint64_t now_ = 7 * kSec;
  FakeClock* clock_ = nullptr;
  std::unique_ptr<ThrottleGroup> group_;
};

TEST_F(ThrottleGroupTest, MembersShareTheBudgetAndTakeTurns) {
  limit(BucketType::kBpsWrite, 1 * kMiB);
  ThrottleGroupMember a(*group_), b(*group_);
  std::vector<Done> done_a, done_b;
  for (int i = 0; i < 100; i++) {
    send(a, kWrite, 64 * kKiB, i, done_a);
    send(b, kWrite, 64 * kKiB, i, done_b);
  }
  uint64_t start = now_;
  run_until(start + 10 * kSec);
  // 1 MiB/s for both together: 16 requests per second, plus the first
  // tenth of a second's worth at once.
  uint64_t total = done_a.size() + done_b.size();
  EXPECT_GE(total, 160u);
  EXPECT_LE(total, 162u);
  // In turns: neither gets ahead.
  EXPECT_LE(std::abs(static_cast<int>(done_a.size()) - static_cast<int>(done_b.size())), 1);
  for (int s = 1; s < 10; s++) {
    size_t n = 0;
    for (const auto* d : {&done_a, &done_b}) {
      for (const Done& x : *d) n += x.at >= start + s * kSec && x.at < start + (s + 1) * kSec;
    }
    EXPECT_GE(n, 15u);
    EXPECT_LE(n, 17u);
  }
  release(a);
  release(b);
}

TEST_F(ThrottleGroupTest, RequestsOfOneMemberGoInOrder) {
  limit(BucketType::kOpsTotal, 10);
  ThrottleGroupMember a(*group_);
  std::vector<Done> done;
  for (int i = 0; i < 30; i++) send(a, i % 3 ? kRead : kWrite, 4096, i, done);
  run_until(now_ + 5 * kSec);
  ASSERT_GE(done.size(), 20u);
  std::vector<int> reads, writes;
  for (const Done& d : done) (d.id % 3 ? reads : writes).push_back(d.id);
  EXPECT_TRUE(std::is_sorted(reads.begin(), reads.end()));
  EXPECT_TRUE(std::is_sorted(writes.begin(), writes.end()));
  release(a);
}

TEST_F(ThrottleGroupTest, ReadsDoNotWaitForQueuedWrites) {
  limit(BucketType::kBpsWrite, 1 * kKiB);
  ThrottleGroupMember a(*group_);
  std::vector<Done> writes, reads;
  for (int i = 0; i < 3; i++) send(a, kWrite, 64 * kKiB, i, writes);
  for (int i = 0; i < 3; i++) send(a, kRead, 64 * kKiB, i, reads);
  settle();
  EXPECT_EQ(writes.size(), 1u);  // 64 s per write from now on
  EXPECT_EQ(reads.size(), 3u);
  EXPECT_EQ(a.queued(kWrite), 2u);
  release(a);
}

TEST_F(ThrottleGroupTest, NewLimitsApplyToWaitingRequests) {
  limit(BucketType::kBpsWrite, 1 * kKiB);
  ThrottleGroupMember a(*group_), b(*group_);
  std::vector<Done> done;
  for (int i = 0; i < 3; i++) send(a, kWrite, 64 * kKiB, i, done);
  for (int i = 3; i < 5; i++) send(b, kWrite, 64 * kKiB, i, done);
  run_until(now_ + kSec);
  ASSERT_EQ(done.size(), 1u);
  // Raised: what waited goes now, not after the old 64 s.
  uint64_t changed_at = now_;
  limit(BucketType::kBpsWrite, 100 * kMiB);
  settle();
  ASSERT_EQ(done.size(), 5u);
  for (const Done& d : done) EXPECT_LE(d.at, changed_at);

  // Lowered while requests wait: the buckets start empty, so the first
  // waiting request goes, then the new rate holds (64 s per request).
  limit(BucketType::kBpsWrite, 1 * kMiB);
  for (int i = 5; i < 10; i++) send(a, kWrite, 64 * kKiB, i, done);
  settle();
  ASSERT_EQ(done.size(), 7u);  // a tenth of a second's worth went at once
  limit(BucketType::kBpsWrite, 1 * kKiB);
  run_until(now_ + 10 * kSec);
  EXPECT_EQ(done.size(), 8u);
  release(a);
  release(b);
}

TEST_F(ThrottleGroupTest, DisabledLimitsLetRequestsGo) {
  limit(BucketType::kBpsTotal, 1);  // one byte per second
  ThrottleGroupMember a(*group_), b(*group_);
  std::vector<Done> done_a, done_b;
  for (int i = 0; i < 4; i++) send(a, kWrite, 4096, i, done_a);
  for (int i = 0; i < 4; i++) send(b, kRead, 4096, i, done_b);
  settle();
  ASSERT_EQ(done_a.size() + done_b.size(), 1u);
  // a's queued requests go without time passing; b's still wait.
  a.disable_limits();
  settle();
  EXPECT_EQ(done_a.size(), 4u);
  EXPECT_EQ(done_b.size(), 0u);
  EXPECT_EQ(a.queued(kWrite), 0u);
  // New requests of a go too, until enabled again (nested).
  a.disable_limits();
  a.enable_limits();
  send(a, kWrite, 4096, 4, done_a);
  settle();
  EXPECT_EQ(done_a.size(), 5u);
  a.enable_limits();
  send(a, kWrite, 4096, 5, done_a);
  settle();
  EXPECT_EQ(done_a.size(), 5u);
  release(a);
  EXPECT_EQ(done_a.size(), 6u);
  release(b);
  EXPECT_EQ(done_b.size(), 4u);
}

TEST_F(ThrottleGroupTest, OthersCarryOnWhenAMemberLeaves) {
  limit(BucketType::kBpsWrite, 1 * kMiB);
  auto a = std::make_unique<ThrottleGroupMember>(*group_);
  ThrottleGroupMember b(*group_);
  std::vector<Done> done_a, done_b;
  for (int i = 0; i < 20; i++) send(*a, kWrite, 64 * kKiB, i, done_a);
  for (int i = 0; i < 10; i++) send(b, kWrite, 64 * kKiB, i, done_b);
  run_until(now_ + kSec / 2);
  ASSERT_LT(done_b.size(), 10u);
  release(*a);
  EXPECT_EQ(done_a.size(), 20u);
  a.reset();
  EXPECT_EQ(group_->member_count(), 1u);
  run_until(now_ + 2 * kSec);
  EXPECT_EQ(done_b.size(), 10u);
}

TEST_F(ThrottleGroupTest, BadLimitsChangeNothing) {
  limit(BucketType::kBpsRead, 1000);
  ThrottleConfig bad;
  bad.bucket(BucketType::kBpsTotal).avg = 10;
  bad.bucket(BucketType::kBpsRead).avg = 10;
  auto r = group_->set_config(bad);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message,
            "bps/iops/max total values and read/write values cannot be used at the same time");
  EXPECT_EQ(group_->config().bucket(BucketType::kBpsRead).avg, 1000u);
  EXPECT_EQ(group_->config().bucket(BucketType::kBpsTotal).avg, 0u);
}

TEST(ThrottleGroupsTest, RegistryRefusesDuplicatesBadLimitsAndGroupsInUse) {
  Loop loop;
  ThrottleGroups groups(loop);
  ThrottleConfig c;
  c.bucket(BucketType::kOpsTotal).avg = 100;
  auto g = groups.create("g", c);
  ASSERT_TRUE(g);
  EXPECT_EQ((*g)->name(), "g");
  EXPECT_EQ(groups.find("g"), *g);
  auto dup = groups.create("g", c);
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.error().message, "A group with this name already exists");
  c.bucket(BucketType::kOpsTotal).max = 50;
  auto bad = groups.create("h", c);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().message, "bps_max/iops_max cannot be lower than bps/iops");
  EXPECT_EQ(groups.find("h"), nullptr);
  {
    ThrottleGroupMember m(**g);
    auto busy = groups.remove("g");
    ASSERT_FALSE(busy);
    EXPECT_EQ(busy.error().message, "object 'g' is in use, can not be deleted");
  }
  EXPECT_TRUE(groups.remove("g"));
  EXPECT_EQ(groups.find("g"), nullptr);
  EXPECT_FALSE(groups.remove("g"));
}

}  // namespace
}  // namespace strata
