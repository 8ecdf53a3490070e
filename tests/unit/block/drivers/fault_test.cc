#include <gtest/gtest.h>

#include "block/core/graph.h"
#include "strata/drive.h"

namespace strata {
namespace {

using nlohmann::json;

json fault_over_null(json rules) {
  return {{"driver", "fault"},
          {"rules", std::move(rules)},
          {"file", {{"driver", "null-co"}, {"size", 1 << 20}, {"read-zeroes", true}}}};
}

TEST(FaultFilterTest, InjectsErrorsByEventRangeAndCount) {
  Engine engine;
  auto d = engine.run(Drive::co_open(
      engine, fault_over_null({{{"event", "write"}, {"errno", "ENOSPC"}, {"offset", 65536},
                                {"length", 4096}, {"count", 2}}})));
  ASSERT_TRUE(d) << d.error().message;
  std::vector<uint8_t> buf(4096);
  EXPECT_TRUE((*d)->write(0, buf));  // outside the range
  for (int i = 0; i < 2; i++) {
    auto r = (*d)->write(65536, buf);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, ENOSPC);
  }
  EXPECT_TRUE((*d)->write(65536, buf));  // count exhausted
  EXPECT_TRUE((*d)->read(65536, buf));   // reads never matched
  (*d)->close();
}

TEST(FaultFilterTest, SkipLetsTheFirstMatchesThroughAndFlushCanFail) {
  Engine engine;
  auto d = engine.run(Drive::co_open(
      engine, fault_over_null({{{"event", "read"}, {"errno", 5}, {"skip", 1}, {"count", 1}},
                               {{"event", "flush"}, {"errno", "EIO"}}})));
  ASSERT_TRUE(d);
  std::vector<uint8_t> buf(512);
  EXPECT_TRUE((*d)->read(0, buf));
  auto r = (*d)->read(0, buf);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EIO);
  EXPECT_NE(r.error().message.find("injected fault"), std::string::npos);
  EXPECT_TRUE((*d)->read(0, buf));
  EXPECT_FALSE((*d)->flush());
  Node* top = (*d)->edge()->node();
  EXPECT_EQ(top->stats().failed_rd_operations, 1u);
  EXPECT_EQ(top->stats().failed_flush_operations, 1u);
  (*d)->close();
}

TEST(FaultFilterTest, DelayWithoutErrorOnlySlowsDown) {
  Engine engine;
  auto d = engine.run(Drive::co_open(
      engine, fault_over_null({{{"event", "any"}, {"errno", 0}, {"delay-ms", 30}}})));
  ASSERT_TRUE(d);
  std::vector<uint8_t> buf(512);
  uint64_t t0 = Loop::now_ns();
  EXPECT_TRUE((*d)->read(0, buf));
  EXPECT_GE(Loop::now_ns() - t0, 25'000'000u);
  (*d)->close();
}

TEST(FaultFilterTest, BadRulesAreRefused) {
  Engine engine;
  auto r = engine.run(engine.graph().co_add(
      {{"driver", "fault"}, {"node-name", "f"}, {"rules", {{{"event", "explode"}}}},
       {"file", {{"driver", "null-co"}}}}));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message, "Parameter 'event' does not accept value 'explode'");
  r = engine.run(engine.graph().co_add({{"driver", "fault"}, {"node-name", "f"},
                                        {"rules", {{{"errno", 5}}}},
                                        {"file", {{"driver", "null-co"}}}}));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message, "Parameter 'rules[0].event' is missing");
  EXPECT_TRUE(engine.graph().nodes().empty());
}

TEST(FaultFilterTest, AFailingRequestDoesNotDisturbOthers) {
  Engine engine;
  auto d = engine.run(Drive::co_open(
      engine, fault_over_null({{{"event", "read"}, {"offset", 0}, {"length", 512}}})));
  ASSERT_TRUE(d);
  std::vector<uint8_t> a(512), b(512, 1);
  EXPECT_FALSE((*d)->read(0, a));
  EXPECT_TRUE((*d)->read(512, b));
  EXPECT_EQ(b[0], 0);
  (*d)->close();
}

}  // namespace
}  // namespace strata
