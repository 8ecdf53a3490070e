// Drive: closing or destroying a drive with requests in flight waits for
// them before the edge they use goes away (and, for a drive that opened
// its node, before the node closes); a request after close fails with
// ENOMEDIUM instead of touching a detached edge.
#include <gtest/gtest.h>

#include <optional>
#include <vector>

#include "block/core/graph.h"
#include "strata/drive.h"

namespace strata {
namespace {

using nlohmann::json;

constexpr uint64_t kLatencyNs = 30 * 1000 * 1000;

json slow_null() {
  return {
      {"driver", "null-co"}, {"size", 1 << 20}, {"read-zeroes", true}, {"latency-ns", kLatencyNs}};
}

Task<void> co_read(Drive& drive, std::vector<uint8_t>& buf, std::optional<Result<void>>& out) {
  out = co_await drive.co_read(0, buf);
}

Task<void> co_wait_ms(Loop& loop, uint64_t ms) {
  co_await loop.co_sleep(ms);
}

class DriveTest : public ::testing::Test {
 protected:
  std::unique_ptr<Drive> open() {
    auto d = engine_.run(Drive::co_open(engine_, slow_null()));
    EXPECT_TRUE(d) << d.error().message;
    return d ? std::move(*d) : nullptr;
  }
  void start_read(Drive& drive) { engine_.loop().spawn(co_read(drive, buf_, read_)); }
  Engine engine_;
  std::vector<uint8_t> buf_ = std::vector<uint8_t>(4096, 0xff);
  std::optional<Result<void>> read_;
};

TEST_F(DriveTest, CloseWaitsForTheRequestsInFlight) {
  auto drive = open();
  ASSERT_TRUE(drive);
  start_read(*drive);
  engine_.run(co_wait_ms(engine_.loop(), 1));
  ASSERT_FALSE(read_.has_value());
  engine_.run(drive->co_close());
  ASSERT_TRUE(read_.has_value());
  EXPECT_TRUE(*read_) << read_->error().message;
  EXPECT_EQ(buf_[0], 0);
  EXPECT_TRUE(engine_.graph().nodes().empty());
}

TEST_F(DriveTest, RequestsAfterCloseFailWithNoMedium) {
  auto drive = open();
  ASSERT_TRUE(drive);
  engine_.run(drive->co_close());
  auto r = engine_.run(drive->co_read(0, buf_));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ENOMEDIUM);
  auto w = engine_.run(drive->co_write(0, buf_));
  ASSERT_FALSE(w);
  EXPECT_EQ(w.error().code, ENOMEDIUM);
  EXPECT_EQ(drive->size(), 0u);
  engine_.run(drive->co_close());  // a second close does nothing
}

TEST_F(DriveTest, ADestroyedDriveLetsItsRequestsFinishFirst) {
  auto drive = open();
  ASSERT_TRUE(drive);
  start_read(*drive);
  engine_.run(co_wait_ms(engine_.loop(), 1));
  drive.reset();
  engine_.run(co_wait_ms(engine_.loop(), 3 * kLatencyNs / 1000000));
  ASSERT_TRUE(read_.has_value());
  EXPECT_TRUE(*read_) << read_->error().message;
  EXPECT_TRUE(engine_.graph().nodes().empty());
}

}  // namespace
}  // namespace strata
