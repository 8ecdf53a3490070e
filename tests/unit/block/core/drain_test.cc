// Graph-level drains: parents and subtrees covered, root owners told and
// waited for, requests queued at the edge and sent where it points after.
#include <gtest/gtest.h>

#include "block/core/graph_change.h"
#include "strata/drive.h"
#include "unit/block/core/mem_driver.h"

namespace strata {
namespace {

using testing::MemState;
using testing::register_mem_driver;

// A root owner that winds down when told, like a job.
class TestOwner final : public EdgeOwner {
 public:
  void drained_begin() override { begins++; }
  bool drained_busy() const override { return busy; }
  void drained_end() override { ends++; }
  int begins = 0;
  int ends = 0;
  bool busy = false;
};

class DrainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    a_.data.assign(65536, 0xAA);
    b_.data.assign(65536, 0xBB);
    register_mem_driver(engine_, &a_, "mem-a");
    register_mem_driver(engine_, &b_, "mem-b");
  }
  void TearDown() override { engine_.run(engine_.co_close_all()); }
  Node* add(nlohmann::json options) {
    auto n = engine_.run(engine_.graph().co_add(std::move(options)));
    EXPECT_TRUE(n) << n.error().message;
    return n ? *n : nullptr;
  }
  Graph& graph() { return engine_.graph(); }
  Loop& loop() { return engine_.loop(); }

  Engine engine_;
  MemState a_, b_;
};

Task<void> co_write(Drive& d, uint64_t off, uint8_t byte, std::vector<int>* done, int id) {
  std::vector<uint8_t> buf(4096, byte);
  auto r = co_await d.co_write(off, buf);
  EXPECT_TRUE(r) << r.error().message;
  done->push_back(id);
}

TEST_F(DrainTest, WaitsForRequestsInFlightAndHoldsNewOnesBack) {
  a_.delay_ms = 10;
  add({{"driver", "mem-a"}, {"node-name", "a"}});
  add({{"driver", "raw"}, {"node-name", "fmt"}, {"file", "a"}});
  auto d = Drive::attach(engine_, "fmt", {.writable = true});
  ASSERT_TRUE(d);
  std::vector<int> done;
  TaskGroup g(loop());
  g.spawn(co_write(**d, 0, 1, &done, 1));
  // Draining the protocol node covers the format node above it.
  auto section = engine_.run(graph().co_drain({graph().find("a")}));
  EXPECT_EQ(done, std::vector<int>{1});
  EXPECT_EQ(graph().find("a")->in_flight(), 0u);
  EXPECT_TRUE(graph().find("fmt")->quiesced());
  g.spawn(co_write(**d, 4096, 2, &done, 2));
  engine_.run(loop().co_sleep(30));
  EXPECT_EQ(done, std::vector<int>{1});  // held back at the edge
  section.reset();
  engine_.run(g.co_join());
  EXPECT_EQ(done, (std::vector<int>{1, 2}));
  EXPECT_FALSE(graph().find("fmt")->quiesced());
  (*d)->close();
}

TEST_F(DrainTest, SubtreeDrainCoversChildrenAndWhatIsAboveThem) {
  add({{"driver", "mem-a"}, {"node-name", "a"}});
  add({{"driver", "raw"}, {"node-name", "fmt"}, {"file", "a"}});
  add({{"driver", "raw"}, {"node-name", "other"}, {"file", "a"}});
  auto section = engine_.run(graph().co_drain({graph().find("fmt")}, DrainScope::kSubtree));
  EXPECT_TRUE(graph().find("a")->quiesced());
  EXPECT_TRUE(graph().find("other")->quiesced());
  section.reset();
  auto parents = engine_.run(graph().co_drain({graph().find("fmt")}));
  EXPECT_FALSE(graph().find("a")->quiesced());
  EXPECT_FALSE(graph().find("other")->quiesced());
}

Task<void> co_become_idle(Loop& loop, TestOwner* owner, Node* node) {
  co_await loop.co_sleep(20);
  owner->busy = false;
  node->kick_drain();
}

TEST_F(DrainTest, OwnersAreToldAndBusyOwnersAreWaitedFor) {
  Node* a = add({{"driver", "mem-a"}, {"node-name", "a"}});
  TestOwner owner;
  auto edge =
      graph().attach_root(*a, "job 'j'", kPermConsistentRead, kPermAll,
                          {.backend = false, .owner = &owner, .waits_while_drained = false});
  ASSERT_TRUE(edge);
  owner.busy = true;
  TaskGroup g(loop());
  g.spawn(co_become_idle(loop(), &owner, a));
  auto section = engine_.run(graph().co_drain({a}));
  EXPECT_FALSE(owner.busy);  // the drain returned only once the owner was idle
  EXPECT_EQ(owner.begins, 1);
  EXPECT_EQ(owner.ends, 0);
  // The owner's own requests are not held back (it winds down itself).
  std::vector<uint8_t> buf(512);
  EXPECT_TRUE(engine_.run((*edge)->co_pread(0, buf)));
  // A nested drain tells the owner nothing new.
  auto inner = engine_.run(graph().co_drain({a}));
  inner.reset();
  EXPECT_EQ(owner.ends, 0);
  section.reset();
  EXPECT_EQ(owner.begins, 1);
  EXPECT_EQ(owner.ends, 1);
  engine_.run(g.co_join());
  engine_.run(graph().co_detach(*edge));
}

TEST_F(DrainTest, AnEdgeMovedOrDetachedDuringADrainKeepsItsOwnerBalanced) {
  Node* a = add({{"driver", "mem-a"}, {"node-name", "a"}});
  Node* b = add({{"driver", "mem-b"}, {"node-name", "b"}});
  TestOwner owner;
  auto edge =
      graph().attach_root(*a, "job 'j'", kPermConsistentRead, kPermAll,
                          {.backend = false, .owner = &owner, .waits_while_drained = false});
  ASSERT_TRUE(edge);
  auto section = engine_.run(graph().co_drain({a}));
  EXPECT_EQ(owner.begins, 1);
  ASSERT_TRUE(graph().retarget(**edge, *b));  // to a node that is not drained
  EXPECT_EQ(owner.ends, 1);
  ASSERT_TRUE(graph().retarget(**edge, *a));
  EXPECT_EQ(owner.begins, 2);
  engine_.run(graph().co_detach(*edge));
  EXPECT_EQ(owner.ends, 2);
  section.reset();
  EXPECT_EQ(owner.ends, 2);
}

Task<void> co_pivot_with_write_queued(Engine& engine, Drive& d, std::vector<int>* done) {
  Graph& graph = engine.graph();
  GraphChange change(graph);
  std::vector<Node*> drained = {graph.find("a"), graph.find("b")};
  co_await change.co_drain(std::move(drained));
  // A request arriving during the pivot waits at the edge...
  engine.loop().spawn(co_write(d, 8192, 0x33, done, 1));
  co_await engine.loop().co_sleep(5);
  EXPECT_TRUE(done->empty());
  EXPECT_TRUE(change.replace(*graph.find("a"), *graph.find("b")));
  EXPECT_TRUE(change.commit());
  co_await change.co_finish();
}

TEST_F(DrainTest, ARequestQueuedDuringAPivotIsServedByTheNewNode) {
  add({{"driver", "mem-a"}, {"node-name", "a"}});
  add({{"driver", "mem-b"}, {"node-name", "b"}});
  auto d = Drive::attach(engine_, "a", {.writable = true});
  ASSERT_TRUE(d);
  std::vector<int> done;
  engine_.run(co_pivot_with_write_queued(engine_, **d, &done));
  engine_.run(loop().co_sleep(5));
  EXPECT_EQ(done, std::vector<int>{1});
  // ... and then goes to the node its edge points at.
  EXPECT_EQ(b_.data[8192], 0x33);
  EXPECT_EQ(a_.data[8192], 0xAA);
  (*d)->close();
}

// The node the edge leaves stays drained (a job's own drain of its source
// outlives the pivot): the queued request must follow the edge, not wait for
// the old node, which may even be closed before its drain ends.
Task<void> co_pivot_away_from_a_node_still_drained(Engine& engine, Drive& d,
                                                   std::vector<int>* done) {
  Graph& graph = engine.graph();
  std::vector<Node*> outer = {graph.find("a")};
  auto held = co_await graph.co_drain(std::move(outer));
  engine.loop().spawn(co_write(d, 8192, 0x44, done, 1));
  co_await engine.loop().co_sleep(5);
  EXPECT_TRUE(done->empty());
  GraphChange change(graph);
  std::vector<Node*> drained = {graph.find("a"), graph.find("b")};
  co_await change.co_drain(std::move(drained));
  EXPECT_TRUE(change.replace(*graph.find("a"), *graph.find("b")));
  EXPECT_TRUE(change.commit());
  co_await change.co_finish();
  co_await engine.loop().co_sleep(5);
  EXPECT_EQ(*done, std::vector<int>{1});  // served by b while a is still drained
  EXPECT_TRUE(graph.find("a")->quiesced());
}

TEST_F(DrainTest, ARequestQueuedAtANodeThatStaysDrainedFollowsItsEdgeToTheNewNode) {
  add({{"driver", "mem-a"}, {"node-name", "a"}});
  add({{"driver", "mem-b"}, {"node-name", "b"}});
  auto d = Drive::attach(engine_, "a", {.writable = true});
  ASSERT_TRUE(d);
  std::vector<int> done;
  engine_.run(co_pivot_away_from_a_node_still_drained(engine_, **d, &done));
  EXPECT_EQ(done, std::vector<int>{1});
  EXPECT_EQ(b_.data[8192], 0x44);
  EXPECT_EQ(a_.data[8192], 0xAA);
  (*d)->close();
}

}  // namespace
}  // namespace strata
