// Write thresholds: the check in the dispatcher (which requests, which
// range), the one-shot disarm and the graph's listeners.
#include "block/core/write_threshold.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "strata/drive.h"
#include "unit/block/core/mem_driver.h"

namespace strata {
namespace {

using testing::MemState;
using testing::register_mem_driver;

TEST(WriteThresholdExceeded, OnlyAnEndPastAnArmedThreshold) {
  EXPECT_FALSE(write_threshold_exceeded("n", 0, 0, 1 << 20));
  EXPECT_FALSE(write_threshold_exceeded("n", 4096, 0, 4096));  // ends at it
  EXPECT_FALSE(write_threshold_exceeded("n", 4096, 100, 10));
  auto e = write_threshold_exceeded("n", 4096, 4000, 200);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->node_name, "n");
  EXPECT_EQ(e->amount_exceeded, 104u);
  EXPECT_EQ(e->write_threshold, 4096u);
  e = write_threshold_exceeded("n", UINT64_MAX - 1, UINT64_MAX - 10, 10);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->amount_exceeded, 1u);
}

class WriteThresholdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    state_.data.assign(1 << 20, 0);
    register_mem_driver(engine_, &state_);
    listener_ = listeners().add([this](const WriteThresholdEvent& e) { events_.push_back(e); });
  }
  void TearDown() override {
    if (drive_) drive_->close();
    listeners().remove(listener_);
  }
  WriteThresholdListeners& listeners() { return engine_.graph().write_threshold_listeners(); }
  void open(nlohmann::json extra = nlohmann::json::object()) {
    nlohmann::json o = {{"driver", "mem"}, {"node-name", "m0"}};
    o.update(extra);
    auto d = engine_.run(Drive::co_open(engine_, o, {}));
    ASSERT_TRUE(d) << d.error().message;
    drive_ = std::move(*d);
  }
  Node& node(const char* name = "m0") { return *engine_.graph().find(name); }
  void write(uint64_t offset, uint64_t bytes) {
    std::vector<uint8_t> buf(bytes, 0x5a);
    ASSERT_TRUE(drive_->write(offset, buf));
  }
  // The one event expected since the last call, as (node, amount, threshold).
  void expect_event(const std::string& name, uint64_t amount, uint64_t threshold) {
    ASSERT_EQ(events_.size(), 1u);
    EXPECT_EQ(events_[0].node_name, name);
    EXPECT_EQ(events_[0].amount_exceeded, amount);
    EXPECT_EQ(events_[0].write_threshold, threshold);
    events_.clear();
  }

  Engine engine_;
  MemState state_;
  std::unique_ptr<Drive> drive_;
  std::vector<WriteThresholdEvent> events_;
  uint64_t listener_ = 0;
};

TEST_F(WriteThresholdTest, FiresOnceThenStaysDisarmedUntilArmedAgain) {
  open();
  node().set_write_threshold(65536);
  write(0, 65536);  // ends at the threshold: not past it
  EXPECT_TRUE(events_.empty());
  EXPECT_EQ(node().write_threshold(), 65536u);
  write(65536 - 512, 4096);
  expect_event("m0", 3584, 65536);
  EXPECT_EQ(node().write_threshold(), 0u);
  write(131072, 4096);
  EXPECT_TRUE(events_.empty());
  node().set_write_threshold(100000);
  write(200000, 1);
  expect_event("m0", 100001, 100000);
}

TEST_F(WriteThresholdTest, ZeroDisarms) {
  open();
  node().set_write_threshold(4096);
  node().set_write_threshold(0);
  write(0, 8192);
  ASSERT_TRUE(drive_->write_zeroes(65536, 4096));
  EXPECT_TRUE(events_.empty());
}

TEST_F(WriteThresholdTest, ReadsAndFlushesDoNotCount) {
  open();
  node().set_write_threshold(1);
  std::vector<uint8_t> buf(65536);
  ASSERT_TRUE(drive_->read(65536, buf));
  ASSERT_TRUE(drive_->flush());
  EXPECT_TRUE(events_.empty());
  EXPECT_EQ(node().write_threshold(), 1u);
}

TEST_F(WriteThresholdTest, UnalignedWriteCountsItsPaddedRange) {
  state_.alignment = 4096;
  open();
  node().set_write_threshold(5000);
  write(1234, 100);  // padded to [0, 4096)
  EXPECT_TRUE(events_.empty());
  write(4000, 200);  // padded to [0, 8192)
  expect_event("m0", 8192 - 5000, 5000);
}

TEST_F(WriteThresholdTest, WriteZeroesCountsPieceByPiece) {
  state_.alignment = 512;
  open();
  // [100, 2000): head block [0, 512), middle [512, 1536), tail [1536, 2048);
  // the middle is the first piece past 1000.
  node().set_write_threshold(1000);
  ASSERT_TRUE(drive_->write_zeroes(100, 1900));
  expect_event("m0", 536, 1000);
  // Within two blocks: one padded write [4096, 5120).
  node().set_write_threshold(4200);
  ASSERT_TRUE(drive_->write_zeroes(4196, 600));
  expect_event("m0", 920, 4200);
  // Aligned: the request itself.
  node().set_write_threshold(8192);
  ASSERT_TRUE(drive_->write_zeroes(8192, 512));
  expect_event("m0", 512, 8192);
}

TEST_F(WriteThresholdTest, DetectedZeroesCountThePaddedWrite) {
  state_.alignment = 512;
  open({{"detect-zeroes", "on"}});
  // As a write (QEMU finds the zeroes after its check), not piece by piece
  // as the same write-zeroes would be (536).
  node().set_write_threshold(1000);
  std::vector<uint8_t> zeroes(1900, 0);
  ASSERT_TRUE(drive_->write(100, zeroes));
  expect_event("m0", 2048 - 1000, 1000);
  // The zeroes were found (the aligned middle went to the driver as such).
  EXPECT_TRUE(std::any_of(state_.log.begin(), state_.log.end(),
                          [](const testing::MemRequest& r) { return r.op == 'z'; }));
}

TEST_F(WriteThresholdTest, DiscardCountsOnlyWhenTheNodeUnmaps) {
  open();
  node().set_write_threshold(1000);
  ASSERT_TRUE(drive_->discard(0, 65536));  // discard=ignore: nothing runs
  EXPECT_TRUE(events_.empty());
  drive_->close();
  drive_.reset();
  open({{"node-name", "m1"}, {"discard", "unmap"}});
  node("m1").set_write_threshold(1000);
  ASSERT_TRUE(drive_->discard(900, 300));  // the request as asked, unaligned
  expect_event("m1", 200, 1000);
}

TEST_F(WriteThresholdTest, EachNodeHasItsOwnThreshold) {
  auto d = engine_.run(Drive::co_open(
      engine_,
      {{"driver", "raw"}, {"node-name", "top"}, {"file", {{"driver", "mem"}, {"node-name", "m0"}}}},
      {}));
  ASSERT_TRUE(d) << d.error().message;
  drive_ = std::move(*d);
  node("top").set_write_threshold(8192);
  node("m0").set_write_threshold(4096);
  write(4096, 512);  // passes the protocol node's threshold only
  expect_event("m0", 512, 4096);
  EXPECT_EQ(node("top").write_threshold(), 8192u);
  write(8192, 512);
  expect_event("top", 512, 8192);
}

TEST_F(WriteThresholdTest, ListenersMayArmAgainAndBeRemoved) {
  open();
  uint64_t rearm = listeners().add(
      [this](const WriteThresholdEvent& e) { node().set_write_threshold(e.write_threshold * 2); });
  node().set_write_threshold(4096);
  write(4096, 512);
  expect_event("m0", 512, 4096);
  EXPECT_EQ(node().write_threshold(), 8192u);
  listeners().remove(rearm);
  write(8192, 512);
  expect_event("m0", 512, 8192);
  EXPECT_EQ(node().write_threshold(), 0u);
}

}  // namespace
}  // namespace strata
