// Extent lists for NBD block status: merging and bounds, chain status over
// real nodes, and dirty bitmaps resolved for an export.
#include "nbd/extents.h"

#include <gtest/gtest.h>

#include "block/bitmap/dirty_bitmap.h"
#include "block/core/graph.h"
#include "nbd/bitmaps.h"
#include "nbd/export.h"
#include "nbd/protocol.h"
#include "strata/engine.h"

namespace strata::nbd {
namespace {

TEST(NbdExtents, AppendMergesAndBounds) {
  std::vector<Extent> out;
  EXPECT_TRUE(append_extent(out, 10, 1, 2));
  EXPECT_TRUE(append_extent(out, 5, 1, 2));
  EXPECT_TRUE(append_extent(out, 7, 0, 2));
  EXPECT_FALSE(append_extent(out, 3, 1, 2));
  EXPECT_TRUE(append_extent(out, 3, 0, 2));
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].length, 15u);
  EXPECT_EQ(out[1].length, 10u);
}

class FakeBitmap final : public BitmapView {
 public:
  const std::string& name() const override { return name_; }
  // Dirty in [100, 200) and [300, 1000).
  std::pair<bool, uint64_t> run(uint64_t offset, uint64_t max) const override {
    uint64_t edges[] = {100, 200, 300, 1000, UINT64_MAX};
    bool dirty = (offset >= 100 && offset < 200) || (offset >= 300 && offset < 1000);
    for (uint64_t e : edges) {
      if (e > offset) return {dirty, std::min(e - offset, max)};
    }
    return {dirty, max};
  }

 private:
  std::string name_ = "fake";
};

TEST(NbdExtents, BitmapExtentsClipAndCap) {
  FakeBitmap bm;
  auto all = bitmap_extents(bm, 50, 500, 100);
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(all[0].length, 50u);
  EXPECT_EQ(all[1].flags, kStateDirty);
  EXPECT_EQ(all[3].length, 250u);  // clipped at 550
  auto one = bitmap_extents(bm, 150, 1000, 1);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].length, 50u);
  EXPECT_EQ(one[0].flags, kStateDirty);
}

class NbdNodeTest : public ::testing::Test {
 protected:
  Node* add(nlohmann::json o) {
    auto n = engine_.run(engine_.graph().co_add(std::move(o)));
    EXPECT_TRUE(n) << n.error().message;
    return n ? *n : nullptr;
  }
  static ExportOptions options(const std::string& node, bool writable) {
    ExportOptions o;
    o.name = "e";
    o.node_name = node;
    o.writable = writable;
    return o;
  }
  void TearDown() override { engine_.run(engine_.co_close_all()); }
  Engine engine_;
};

TEST_F(NbdNodeTest, ChainStatusOfZeroNode) {
  add({{"driver", "null-co"}, {"node-name", "z"}, {"size", 1 << 20}, {"read-zeroes", true}});
  auto exp = Export::create(engine_.graph(), options("z", false), nullptr);
  ASSERT_TRUE(exp) << exp.error().message;
  auto ext =
      engine_.run(co_status_extents((*exp)->root(), ExtentKind::kAllocation, 4096, 8192, 10));
  ASSERT_TRUE(ext);
  ASSERT_EQ(ext->size(), 1u);
  EXPECT_EQ((*ext)[0].length, 8192u);
  EXPECT_NE((*ext)[0].flags & kStateZero, 0u);
  auto depth = engine_.run(co_status_extents((*exp)->root(), ExtentKind::kDepth, 0, 1 << 20, 10));
  ASSERT_TRUE(depth);
  EXPECT_EQ((*depth)[0].length, 1u << 20);
  EXPECT_TRUE(engine_.run((*exp)->co_close(RemoveMode::kSafe)));
}

TEST_F(NbdNodeTest, ExportedBitmapIsBusyAndRulesApply) {
  Node* n = add({{"driver", "null-co"}, {"node-name", "n"}, {"size", 1 << 20}});
  auto bm = n->bitmaps().create(65536, "b0");
  ASSERT_TRUE(bm);
  (*bm)->bits().set(65536, 4096);
  EXPECT_FALSE(resolve_dirty_bitmap(*n, "nope", true));
  // Enabled bitmap of a writable node on a read-only export: refused.
  auto ro = resolve_dirty_bitmap(*n, "b0", false);
  ASSERT_FALSE(ro);
  EXPECT_EQ(ro.error().message, "Enabled bitmap 'b0' incompatible with readonly export");
  {
    auto view = resolve_dirty_bitmap(*n, "b0", true);
    ASSERT_TRUE(view) << view.error().message;
    EXPECT_TRUE((*bm)->busy());
    auto ext = bitmap_extents(**view, 0, 1 << 20, 100);
    ASSERT_EQ(ext.size(), 3u);
    EXPECT_EQ(ext[0].length, 65536u);
    EXPECT_EQ(ext[1].length, 65536u);
    EXPECT_EQ(ext[1].flags, kStateDirty);
    EXPECT_FALSE(resolve_dirty_bitmap(*n, "b0", true));  // busy now
  }
  EXPECT_FALSE((*bm)->busy());
  (*bm)->set_enabled(false);
  EXPECT_TRUE(resolve_dirty_bitmap(*n, "b0", false));
}

TEST_F(NbdNodeTest, SafeRemovalRefusesWhileClientsAreAttached) {
  add({{"driver", "null-co"}, {"node-name", "n"}, {"size", 1 << 20}});
  auto exp = Export::create(engine_.graph(), options("n", true), nullptr);
  ASSERT_TRUE(exp);
  struct Client final : ExportClient {
    Export* exp = nullptr;
    int kicked = 0;
    void disconnect() override {
      kicked++;
      exp->detach_client(this);
    }
  } client;
  client.exp = exp->get();
  ASSERT_TRUE((*exp)->attach_client(&client));
  auto safe = engine_.run((*exp)->co_close(RemoveMode::kSafe));
  ASSERT_FALSE(safe);
  EXPECT_EQ(safe.error().message, "export 'e' still in use");
  EXPECT_TRUE(engine_.run((*exp)->co_close(RemoveMode::kHard)));
  EXPECT_EQ(client.kicked, 1);
  EXPECT_FALSE((*exp)->attach_client(&client));
  EXPECT_EQ((*exp)->root(), nullptr);
}

}  // namespace
}  // namespace strata::nbd
