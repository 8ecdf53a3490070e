// GraphChange: edge operations undone together, edges that stay, frozen
// chains, operation blockers.
#include "block/core/graph_change.h"

#include <gtest/gtest.h>

#include "strata/drive.h"
#include "unit/block/bitmap/layer_driver.h"
#include "unit/block/core/mem_driver.h"

namespace strata {
namespace {

using testing::LayerState;
using testing::MemState;

class GraphChangeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    a_.data.assign(65536, 0xAA);
    b_.data.assign(65536, 0xBB);
    testing::register_mem_driver(engine_, &a_, "mem-a");
    testing::register_mem_driver(engine_, &b_, "mem-b");
    layer_.size = 65536;
    testing::register_layer_driver(engine_, &layer_, "layer");
  }
  void TearDown() override { engine_.run(engine_.co_close_all()); }
  Node* add(nlohmann::json options) {
    auto n = engine_.run(engine_.graph().co_add(std::move(options)));
    EXPECT_TRUE(n) << n.error().message;
    return n ? *n : nullptr;
  }
  // top -> mid -> base, each a layer node.
  void chain() {
    add({{"driver", "layer"}, {"node-name", "base"}});
    add({{"driver", "layer"}, {"node-name", "mid"}, {"backing", "base"}});
    add({{"driver", "layer"}, {"node-name", "top"}, {"backing", "mid"}});
  }
  Node* n(const char* name) { return engine_.graph().find(name); }
  Graph& graph() { return engine_.graph(); }
  Task<void> co_finish(GraphChange& c) { co_await c.co_finish(); }

  Engine engine_;
  MemState a_, b_;
  LayerState layer_;
};

TEST_F(GraphChangeTest, ReplaceLeavesEdgesThatStayAtTheirNode) {
  add({{"driver", "mem-a"}, {"node-name", "a"}});
  add({{"driver", "mem-b"}, {"node-name", "b"}});
  auto job = graph().attach_root(*n("a"), "job 'j'", kPermConsistentRead, kPermAll,
                                 {.backend = false, .stays_at_node = true});
  auto guest = Drive::attach(engine_, "a", {.writable = false, .share_rw = true});
  ASSERT_TRUE(job && guest);
  EXPECT_TRUE(engine_.run(graph().co_replace_node(*n("a"), *n("b"))));
  EXPECT_EQ((*job)->node(), n("a"));
  EXPECT_EQ((*guest)->node_name(), "b");
  (*guest)->close();
  engine_.run(graph().co_detach(*job));
}

TEST_F(GraphChangeTest, APermissionConflictUndoesEveryOperation) {
  add({{"driver", "mem-a"}, {"node-name", "a"}});
  add({{"driver", "mem-b"}, {"node-name", "b"}});
  Node* raw = add({{"driver", "raw"}, {"node-name", "r"}, {"file", "a"}});
  auto wa = Drive::attach(engine_, "a", {.writable = true, .user = "device 'vda'"});
  auto wb = Drive::attach(engine_, "b", {.writable = true, .user = "device 'vdb'"});
  ASSERT_TRUE(wa && wb);
  GraphChange change(graph());
  ASSERT_TRUE(change.retarget(*raw->file(), *n("b")));
  ASSERT_TRUE(change.replace(*n("b"), *n("a")));  // two writers on a
  EXPECT_EQ((*wb)->node_name(), "a");
  auto r = change.commit();
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("Permission conflict on node 'a'"), std::string::npos)
      << r.error().message;
  EXPECT_EQ((*wb)->node_name(), "b");
  EXPECT_EQ(raw->file()->node(), n("a"));
  engine_.run(co_finish(change));
  std::vector<uint8_t> buf(512, 7);
  EXPECT_TRUE((*wb)->write(0, buf));
  EXPECT_EQ(b_.data[0], 7);
  (*wa)->close();
  (*wb)->close();
}

TEST_F(GraphChangeTest, AbortAfterCommitPutsEdgesAndPermissionsBack) {
  chain();
  Node* top = n("top");
  auto reader = Drive::attach(engine_, "top", {.writable = true});
  ASSERT_TRUE(reader);
  Child* backing = top->backing();
  GraphChange change(graph());
  ASSERT_TRUE(change.detach(*backing));
  EXPECT_EQ(top->backing(), nullptr);
  ASSERT_TRUE(change.attach(*top, *n("base"), "backing", kRoleCow));
  ASSERT_TRUE(change.commit());
  EXPECT_EQ(top->backing()->node(), n("base"));
  change.abort();
  EXPECT_EQ(top->backing(), backing);  // the very same edge, back in place
  EXPECT_EQ(top->children().size(), 1u);
  EXPECT_EQ(n("mid")->parents().size(), 1u);
  EXPECT_TRUE(n("base")->parents().size() == 1);
  engine_.run(co_finish(change));
  EXPECT_EQ(top->backing()->node(), n("mid"));
  (*reader)->close();
}

TEST_F(GraphChangeTest, FinishClosesImplicitNodesNobodyUsesAnyMore) {
  add({{"driver", "mem-b"}, {"node-name", "b"}});
  Node* raw = add({{"driver", "raw"}, {"node-name", "r"}, {"file", {{"driver", "mem-a"}}}});
  std::string implicit = raw->file()->node()->name();
  GraphChange change(graph());
  ASSERT_TRUE(change.retarget(*raw->file(), *n("b")));
  ASSERT_TRUE(change.commit());
  EXPECT_TRUE(graph().find(implicit));
  engine_.run(co_finish(change));
  EXPECT_FALSE(graph().find(implicit));
  EXPECT_EQ(raw->file()->node(), n("b"));
}

TEST_F(GraphChangeTest, FrozenChainsCannotBeCutOrMoved) {
  chain();
  add({{"driver", "layer"}, {"node-name", "other"}});
  ASSERT_TRUE(graph().freeze_chain(*n("top"), n("base")));
  auto again = graph().freeze_chain(*n("mid"), nullptr);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().message, "Cannot change 'backing' link from 'mid' to 'base'");
  EXPECT_EQ(graph().check_chain_not_frozen(*n("top"), nullptr).error().message,
            "Cannot change 'backing' link from 'top' to 'mid'");
  {
    GraphChange change(graph());
    auto r = change.detach(*n("top")->backing());
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().message, "Cannot change frozen 'backing' link from 'top' to 'mid'");
    r = change.retarget(*n("mid")->backing(), *n("other"));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().message, "Cannot change frozen 'backing' link from 'mid' to 'base'");
    r = change.replace(*n("mid"), *n("other"));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().message, "Cannot change 'backing' link to 'mid'");
    EXPECT_EQ(n("top")->backing()->node(), n("mid"));
    engine_.run(co_finish(change));
  }
  auto direct = graph().retarget(*n("top")->backing(), *n("other"));
  ASSERT_FALSE(direct);
  // The base's own edges are not part of the frozen chain.
  EXPECT_FALSE(n("base")->backing());
  graph().unfreeze_chain(*n("top"), n("base"));
  EXPECT_TRUE(graph().check_chain_not_frozen(*n("top"), nullptr));
  auto bad = graph().freeze_chain(*n("mid"), n("top"));
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().message, "Node 'top' is not a backing image of 'mid'");
}

TEST_F(GraphChangeTest, OperationBlockersNameTheirReason) {
  Node* a = add({{"driver", "mem-a"}, {"node-name", "a"}});
  EXPECT_TRUE(a->check_op(BlockOp::kResize));
  uint64_t id =
      a->block_ops("block device is in use by block job: stream", block_op_bit(BlockOp::kResize));
  EXPECT_TRUE(a->check_op(BlockOp::kResize));
  auto r = a->check_op(BlockOp::kExternalSnapshot);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message, "Node 'a' is busy: block device is in use by block job: stream");
  a->unblock_ops(id);
  EXPECT_TRUE(a->check_op(BlockOp::kExternalSnapshot));
}

}  // namespace
}  // namespace strata
