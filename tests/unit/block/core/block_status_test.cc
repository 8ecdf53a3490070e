// Block status above a base, through a chain of layers.
#include "block/core/block_status.h"

#include <gtest/gtest.h>

#include "block/core/graph.h"
#include "unit/block/bitmap/layer_driver.h"

namespace strata {
namespace {

using testing::LayerState;

class BlockStatusTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_.size = 1 << 20;
    mid_.size = 1 << 20;
    top_.size = 1 << 20;
    testing::register_layer_driver(engine_, &base_, "layer-base");
    testing::register_layer_driver(engine_, &mid_, "layer-mid");
    testing::register_layer_driver(engine_, &top_, "layer-top");
  }
  void TearDown() override { engine_.run(engine_.co_close_all()); }
  void chain() {
    add({{"driver", "layer-base"}, {"node-name", "base"}});
    add({{"driver", "layer-mid"}, {"node-name", "mid"}, {"backing", "base"}});
    add({{"driver", "layer-top"}, {"node-name", "top"}, {"backing", "mid"}});
  }
  void add(nlohmann::json o) { ASSERT_TRUE(engine_.run(engine_.graph().co_add(std::move(o)))); }
  Node* n(const char* name) { return engine_.graph().find(name); }
  ChainStatus status(Node* base, uint64_t off, uint64_t len) {
    auto st = engine_.run(co_block_status_above(*n("top"), base, off, len));
    EXPECT_TRUE(st) << st.error().message;
    return st ? *st : ChainStatus{};
  }
  Allocation allocated(Node* base, bool include_base, uint64_t off, uint64_t len) {
    auto a = engine_.run(co_is_allocated_above(*n("top"), base, include_base, off, len));
    EXPECT_TRUE(a) << a.error().message;
    return a ? *a : Allocation{};
  }

  Engine engine_;
  LayerState base_, mid_, top_;
};

TEST_F(BlockStatusTest, TheUppermostAllocatingLayerDecides) {
  chain();
  base_.allocate(0, 65536, true);
  mid_.allocate(4096, 4096, true);
  top_.allocate(4096, 512, true);
  ChainStatus st = status(nullptr, 4096, 65536);
  EXPECT_TRUE(st.allocated());
  EXPECT_EQ(st.depth, 1u);
  EXPECT_EQ(st.bytes, 512u);
  st = status(nullptr, 4608, 65536);
  EXPECT_EQ(st.depth, 2u);
  EXPECT_EQ(st.bytes, 4096u - 512u);
  st = status(nullptr, 8192, 65536);
  EXPECT_EQ(st.depth, 3u);
  EXPECT_EQ(st.bytes, 65536u - 8192u);
  st = status(nullptr, 65536, 4096);
  EXPECT_FALSE(st.allocated());
  EXPECT_EQ(st.depth, 0u);
  EXPECT_EQ(st.bottom, 3u);
  EXPECT_TRUE(st.flags & kStatusZero);  // nothing below the last layer
}

TEST_F(BlockStatusTest, TheWalkStopsAboveTheBase) {
  chain();
  base_.allocate(0, 65536, true);
  mid_.allocate(4096, 4096, true);
  ChainStatus st = status(n("base"), 0, 4096);
  EXPECT_FALSE(st.allocated());
  EXPECT_EQ(st.bottom, 2u);
  EXPECT_EQ(status(n("mid"), 4096, 4096).allocated(), false);
  EXPECT_EQ(status(n("base"), 4096, 8192).depth, 2u);
  Allocation a = allocated(n("base"), false, 0, 65536);
  EXPECT_FALSE(a.allocated);
  EXPECT_EQ(a.bytes, 4096u);
  a = allocated(n("base"), true, 0, 65536);
  EXPECT_TRUE(a.allocated);
  EXPECT_EQ(a.bytes, 4096u);
  a = allocated(n("mid"), true, 4096, 65536);
  EXPECT_TRUE(a.allocated);
  EXPECT_EQ(a.bytes, 4096u);
}

TEST_F(BlockStatusTest, AShorterBackingReadsAsZeroesPastItsEnd) {
  base_.size = 8192;
  chain();
  ChainStatus st = status(nullptr, 65536, 4096);
  EXPECT_FALSE(st.allocated());
  EXPECT_TRUE(st.flags & kStatusZero);
  EXPECT_EQ(st.bottom, 3u);
}

}  // namespace
}  // namespace strata
