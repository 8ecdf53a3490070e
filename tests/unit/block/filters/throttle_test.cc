// The throttle filter: opening needs an existing group; reads count as
// reads, writes, write-zeroes and discards as writes; flush and block
// status pass while writes wait; a drain lets the waiting requests go, and
// the node can then be deleted and its group removed.
#include <gtest/gtest.h>

#include "block/core/graph.h"
#include "block/filters/throttle_group.h"
#include "strata/drive.h"

namespace strata {
namespace {

using nlohmann::json;

json throttle_over_null(const std::string& group, const std::string& node_name = "") {
  json o = {{"driver", "throttle"},
            {"throttle-group", group},
            {"discard", "unmap"},
            {"file", {{"driver", "null-co"}, {"size", 1 << 20}, {"read-zeroes", true}}}};
  if (!node_name.empty()) o["node-name"] = node_name;
  return o;
}

Task<void> co_settle(Loop& loop) {
  for (int i = 0; i < 50; i++) co_await loop.co_yield_now();
}

Task<void> co_track(Task<Result<void>> request, int* done) {
  auto r = co_await std::move(request);
  EXPECT_TRUE(r) << r.error().message;
  (*done)++;
}

class ThrottleFilterTest : public ::testing::Test {
 protected:
  void make_group(BucketType bucket, uint64_t avg) {
    ThrottleConfig c;
    c.bucket(bucket).avg = avg;
    ASSERT_TRUE(engine_.graph().throttle_groups().create("g", c));
  }
  void spawn(Task<Result<void>> request) {
    engine_.loop().spawn(co_track(std::move(request), &done_));
  }
  void settle() { engine_.run(co_settle(engine_.loop())); }
  std::unique_ptr<DrainSection> drain(Node* node) {
    return engine_.run(engine_.graph().co_drain({node}));
  }

  Engine engine_;
  int done_ = 0;
  std::vector<uint8_t> buf_ = std::vector<uint8_t>(4096, 0x5a);
};

TEST_F(ThrottleFilterTest, NeedsAnExistingGroup) {
  auto r = engine_.run(engine_.graph().co_add(throttle_over_null("nope", "t")));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message, "Throttle group 'nope' does not exist");
  json no_group = throttle_over_null("x", "t");
  no_group.erase("throttle-group");
  r = engine_.run(engine_.graph().co_add(no_group));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message, "Parameter 'throttle-group' is missing");
  EXPECT_TRUE(engine_.graph().nodes().empty());
}

TEST_F(ThrottleFilterTest, WritesZeroesAndDiscardsWaitAsWritesWhileReadsFlushAndStatusGo) {
  make_group(BucketType::kOpsWrite, 1);  // one write per second
  auto d = engine_.run(Drive::co_open(engine_, throttle_over_null("g")));
  ASSERT_TRUE(d) << d.error().message;
  Drive& drive = **d;
  spawn(drive.co_write(0, buf_));
  spawn(drive.co_write_zeroes(4096, 4096));
  spawn(drive.co_discard(8192, 4096));
  settle();
  EXPECT_EQ(done_, 1);
  spawn(drive.co_read(0, buf_));
  spawn(drive.co_flush());
  settle();
  EXPECT_EQ(done_, 3);
  auto st = engine_.run(drive.co_block_status(0, 1 << 20));
  EXPECT_TRUE(st);
  EXPECT_EQ(buf_[0], 0);  // null-co with read-zeroes
  Node* node = drive.edge()->node();
  auto section = drain(node);
  EXPECT_EQ(done_, 5);
  section.reset();
  engine_.run(drive.co_close());
}

TEST_F(ThrottleFilterTest, DrainLetsWaitingRequestsGoThenNodeAndGroupCanGo) {
  make_group(BucketType::kBpsWrite, 1);  // one byte per second
  auto node = engine_.run(engine_.graph().co_add(throttle_over_null("g", "t")));
  ASSERT_TRUE(node) << node.error().message;
  (*node)->set_monitor_owned(true);
  auto d = Drive::attach(engine_, "t");
  ASSERT_TRUE(d);
  for (int i = 0; i < 3; i++) spawn((*d)->co_write(i * 4096, buf_));
  settle();
  ASSERT_EQ(done_, 1);  // the next waits for 4096 s
  EXPECT_EQ(engine_.graph().throttle_groups().remove("g").error().message,
            "object 'g' is in use, can not be deleted");
  auto section = drain(*node);
  EXPECT_EQ(done_, 3);
  section.reset();
  // Limits apply again after the drain.
  spawn((*d)->co_write(0, buf_));
  settle();
  EXPECT_EQ(done_, 3);
  section = drain(*node);
  EXPECT_EQ(done_, 4);
  section.reset();
  engine_.run((*d)->co_close());
  EXPECT_TRUE(engine_.run(engine_.graph().co_del("t")));
  EXPECT_TRUE(engine_.graph().throttle_groups().remove("g"));
}

}  // namespace
}  // namespace strata
