#include <gtest/gtest.h>

#include <random>

#include "unit/block/core/mem_driver.h"
#include "strata/drive.h"

namespace strata {
namespace {

using testing::MemState;
using testing::register_mem_driver;

class IoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    state_.data.assign(1 << 20, 0);
    for (size_t i = 0; i < state_.data.size(); i++) state_.data[i] = static_cast<uint8_t>(i * 7);
    model_ = state_.data;
    register_mem_driver(engine_, &state_);
  }
  std::unique_ptr<Drive> open(DriveOptions o = {}) {
    auto d = engine_.run(Drive::co_open(engine_, {{"driver", "mem"}, {"node-name", "m0"}}, o));
    EXPECT_TRUE(d) << d.error().message;
    return std::move(*d);
  }
  void write_model(uint64_t off, const std::vector<uint8_t>& buf) {
    std::copy(buf.begin(), buf.end(), model_.begin() + off);
  }

  Engine engine_;
  MemState state_;
  std::vector<uint8_t> model_;
};

TEST_F(IoTest, UnalignedWritesAreReadModifyWrittenAtDriverAlignment) {
  state_.alignment = 4096;
  auto drive = open();
  std::vector<uint8_t> buf(5000, 0xAB);
  ASSERT_TRUE(drive->write(1234, buf));
  write_model(1234, buf);
  EXPECT_EQ(state_.data, model_);
  // Reads of the head block and the tail block, then one aligned write.
  ASSERT_GE(state_.log.size(), 3u);
  EXPECT_EQ(state_.log.back().op, 'w');
  EXPECT_EQ(state_.log.back().offset, 0u);
  EXPECT_EQ(state_.log.back().bytes, 8192u);
  std::vector<uint8_t> back(5000);
  ASSERT_TRUE(drive->read(1234, back));
  EXPECT_EQ(back, buf);
  drive->close();
}

TEST_F(IoTest, RandomUnalignedWorkloadMatchesModel) {
  state_.alignment = 512;
  state_.max_transfer = 64 * 1024;
  auto drive = open();
  std::mt19937_64 rng(42);
  for (int i = 0; i < 500; i++) {
    uint64_t off = rng() % (state_.data.size() - 200000);
    uint64_t len = 1 + rng() % 200000;
    if (rng() % 3 == 0) {
      ASSERT_TRUE(drive->write_zeroes(off, len));
      std::fill(model_.begin() + off, model_.begin() + off + len, 0);
    } else {
      std::vector<uint8_t> buf(len, static_cast<uint8_t>(rng()));
      ASSERT_TRUE(drive->write(off, buf));
      write_model(off, buf);
    }
    std::vector<uint8_t> back(len);
    ASSERT_TRUE(drive->read(off, back));
    ASSERT_TRUE(std::equal(back.begin(), back.end(), model_.begin() + off)) << "op " << i;
  }
  EXPECT_EQ(state_.data, model_);
  drive->close();
}

Task<void> co_write_pattern(Drive& d, uint64_t off, uint64_t len, uint8_t byte) {
  std::vector<uint8_t> buf(len, byte);
  auto r = co_await d.co_write(off, buf);
  EXPECT_TRUE(r);
}

TEST_F(IoTest, OverlappingUnalignedWritesAreSerialized) {
  // Two RMW writes sharing an aligned block: without serialization the
  // second read-modify-write would read stale data and undo the first.
  state_.alignment = 4096;
  state_.delay_ms = 5;
  auto drive = open();
  TaskGroup group(engine_.loop());
  group.spawn(co_write_pattern(*drive, 100, 1000, 0x11));
  group.spawn(co_write_pattern(*drive, 2000, 1000, 0x22));
  group.spawn(co_write_pattern(*drive, 700, 500, 0x33));
  engine_.run(group.co_join());
  write_model(100, std::vector<uint8_t>(1000, 0x11));
  write_model(2000, std::vector<uint8_t>(1000, 0x22));
  write_model(700, std::vector<uint8_t>(500, 0x33));
  EXPECT_EQ(state_.data, model_);
  drive->close();
}

TEST_F(IoTest, NonOverlappingAlignedRequestsRunConcurrently) {
  state_.alignment = 512;
  state_.delay_ms = 10;
  auto drive = open();
  TaskGroup group(engine_.loop());
  for (int i = 0; i < 8; i++) group.spawn(co_write_pattern(*drive, i * 65536, 65536, 0x40 + i));
  engine_.run(group.co_join());
  EXPECT_EQ(state_.peak_concurrent, 8);
  drive->close();
}

TEST_F(IoTest, LargeRequestsAreSplitByMaxTransfer) {
  state_.max_transfer = 65536;
  auto drive = open();
  std::vector<uint8_t> buf(300000, 0x5A);
  ASSERT_TRUE(drive->write(1000, buf));
  int writes = 0;
  for (const auto& r : state_.log) writes += r.op == 'w';
  EXPECT_EQ(writes, 5);
  write_model(1000, buf);
  EXPECT_EQ(state_.data, model_);
  drive->close();
}

TEST_F(IoTest, OutOfRangeRequestsFailCleanly) {
  auto drive = open();
  std::vector<uint8_t> buf(4096);
  auto r = drive->read(state_.data.size() - 100, buf);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EINVAL);
  EXPECT_NE(r.error().message.find("out of range"), std::string::npos);
  EXPECT_FALSE(drive->write(state_.data.size(), buf));
  EXPECT_TRUE(state_.log.empty());
  auto& stats = engine_.graph().find("m0")->stats();
  EXPECT_EQ(stats.invalid_rd_operations, 1u);
  EXPECT_EQ(stats.invalid_wr_operations, 1u);
  drive->close();
}

TEST_F(IoTest, FuaIsEmulatedWithAFlushWhenTheDriverLacksIt) {
  auto drive = open();
  std::vector<uint8_t> buf(512, 1);
  ASSERT_TRUE(drive->write(0, buf, /*fua=*/true));
  ASSERT_EQ(state_.log.size(), 2u);
  EXPECT_EQ(state_.log[0].op, 'w');
  EXPECT_EQ(state_.log[1].op, 'f');
  state_.log.clear();
  state_.fua_supported = true;
  ASSERT_TRUE(drive->write(0, buf, true));
  ASSERT_EQ(state_.log.size(), 1u);
  drive->close();
}

TEST_F(IoTest, WriteZeroesFallsBackToWritingZeroBuffers) {
  state_.zeroes_supported = false;
  auto drive = open();
  ASSERT_TRUE(drive->write_zeroes(3000, 70000));
  std::fill(model_.begin() + 3000, model_.begin() + 73000, 0);
  EXPECT_EQ(state_.data, model_);
  drive->close();
}

TEST_F(IoTest, StatisticsCountWritesZeroesAndFailures) {
  auto drive = open();
  Node* node = engine_.graph().find("m0");
  std::vector<uint8_t> buf(100, 9);
  ASSERT_TRUE(drive->write(10, buf));
  ASSERT_TRUE(drive->write_zeroes(500, 20));
  auto r = drive->write(state_.data.size() - 10, buf);  // past the end
  ASSERT_FALSE(r);
  EXPECT_EQ(node->stats().invalid_wr_operations, 1u);
  EXPECT_EQ(node->stats().wr_operations, 1u);
  EXPECT_EQ(node->stats().wr_bytes, 100u);
  EXPECT_EQ(node->stats().zero_operations, 1u);
  EXPECT_EQ(node->stats().zero_bytes, 20u);
  EXPECT_EQ(node->stats().wr_highest_offset, 520u);
  drive->close();
}

TEST_F(IoTest, DetectZeroesTurnsZeroWritesIntoWriteZeroes) {
  auto d = engine_.run(Drive::co_open(
      engine_, {{"driver", "mem"}, {"node-name", "m0"}, {"detect-zeroes", "on"}}, {}));
  ASSERT_TRUE(d);
  std::vector<uint8_t> zeroes(4096, 0);
  ASSERT_TRUE((*d)->write(8192, zeroes));
  ASSERT_EQ(state_.log.size(), 1u);
  EXPECT_EQ(state_.log[0].op, 'z');
  (*d)->close();
}

TEST_F(IoTest, DiscardIsIgnoredUnlessTheNodeUnmaps) {
  auto drive = open();
  ASSERT_TRUE(drive->discard(0, 65536));
  EXPECT_TRUE(state_.log.empty());
  drive->close();
  state_.log.clear();
  auto d = engine_.run(Drive::co_open(
      engine_, {{"driver", "mem"}, {"node-name", "m1"}, {"discard", "unmap"}}, {}));
  ASSERT_TRUE(d);
  ASSERT_TRUE((*d)->discard(0, 65536));
  ASSERT_EQ(state_.log.size(), 1u);
  EXPECT_EQ(state_.log[0].op, 'd');
  (*d)->close();
}

}  // namespace
}  // namespace strata
