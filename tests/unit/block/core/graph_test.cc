#include <gtest/gtest.h>

#include <algorithm>

#include "strata/drive.h"
#include "unit/block/core/mem_driver.h"

namespace strata {
namespace {

using testing::MemState;
using testing::register_mem_driver;

class GraphTest : public ::testing::Test {
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
  Error add_error(nlohmann::json options) {
    auto n = engine_.run(engine_.graph().co_add(std::move(options)));
    EXPECT_FALSE(n);
    return n ? Error{} : n.error();
  }

  Engine engine_;
  MemState a_, b_;
};

TEST_F(GraphTest, NodeNamesFollowQemuRules) {
  EXPECT_TRUE(Graph::check_node_name("disk0"));
  EXPECT_TRUE(Graph::check_node_name("a-b.c_d"));
  EXPECT_EQ(Graph::check_node_name("0disk").error().message, "Invalid node-name: '0disk'");
  EXPECT_EQ(Graph::check_node_name("#block1").error().message, "Invalid node-name: '#block1'");
  EXPECT_EQ(Graph::check_node_name("").error().message, "Invalid node-name: ''");
  EXPECT_EQ(Graph::check_node_name("a b").error().message, "Invalid node-name: 'a b'");
  EXPECT_TRUE(Graph::check_node_name(std::string(31, 'x')));
  EXPECT_EQ(Graph::check_node_name(std::string(32, 'x')).error().message, "Node name too long");
}

TEST_F(GraphTest, BadOptionsGetQemuMessages) {
  EXPECT_EQ(add_error({{"node-name", "x"}}).message, "Parameter 'driver' is missing");
  EXPECT_EQ(add_error({{"driver", "nope"}, {"node-name", "x"}}).message,
            "Parameter 'driver' does not accept value 'nope'");
  EXPECT_EQ(add_error({{"driver", "mem-a"}}).message,
            "'node-name' must be specified for the root node");
  EXPECT_EQ(add_error({{"driver", "mem-a"}, {"node-name", "x"}, {"bogus", 1}}).message,
            "Parameter 'bogus' is unexpected");
  EXPECT_EQ(add_error({{"driver", "mem-a"}, {"node-name", "x"}, {"read-only", "yes"}}).message,
            "Invalid parameter type for 'read-only', expected: boolean");
  EXPECT_EQ(add_error({{"driver", "raw"}, {"node-name", "x"}}).message,
            "Parameter 'file' is missing");
  EXPECT_EQ(add_error({{"driver", "raw"}, {"node-name", "x"}, {"file", "ghost"}}).message,
            "Cannot find device='' nor node-name='ghost'");
  EXPECT_EQ(add_error({{"driver", "mem-a"}, {"node-name", "x"}, {"force-share", true}}).message,
            "force-share=on can only be used with read-only images");
  add({{"driver", "mem-a"}, {"node-name", "x"}});
  EXPECT_EQ(add_error({{"driver", "mem-b"}, {"node-name", "x"}}).message,
            "Duplicate nodes with node-name='x'");
  // A failed open leaves nothing behind.
  EXPECT_EQ(engine_.graph().nodes().size(), 1u);
}

TEST_F(GraphTest, InlineChildrenGetImplicitNames) {
  Node* raw = add({{"driver", "raw"}, {"node-name", "r"}, {"file", {{"driver", "mem-a"}}}});
  ASSERT_TRUE(raw);
  ASSERT_TRUE(raw->file());
  EXPECT_EQ(raw->file()->node()->name().rfind("#block", 0), 0u);
  EXPECT_TRUE(raw->file()->node()->implicit());
  // Deleting the parent closes the implicit child.
  ASSERT_TRUE(engine_.run(engine_.graph().co_del("r")));
  EXPECT_TRUE(engine_.graph().nodes().empty());
}

TEST_F(GraphTest, BlockdevDelRefusesNodesInUse) {
  add({{"driver", "mem-a"}, {"node-name", "base"}});
  add({{"driver", "raw"}, {"node-name", "top"}, {"file", "base"}});
  auto r = engine_.run(engine_.graph().co_del("base"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message, "Node base is in use");
  r = engine_.run(engine_.graph().co_del("nothing"));
  EXPECT_EQ(r.error().message, "Failed to find node with node-name='nothing'");
  ASSERT_TRUE(engine_.run(engine_.graph().co_del("top")));
  // Referenced (not inline) children stay: the monitor owns them.
  EXPECT_TRUE(engine_.graph().find("base"));
  ASSERT_TRUE(engine_.run(engine_.graph().co_del("base")));
}

TEST_F(GraphTest, ConflictingWritersAreRefusedWithBothUsersNamed) {
  add({{"driver", "mem-a"}, {"node-name", "m"}});
  auto first = Drive::attach(engine_, "m", {.writable = true, .user = "device 'vda'"});
  ASSERT_TRUE(first);
  auto second = Drive::attach(engine_, "m", {.writable = true, .user = "device 'vdb'"});
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().message,
            "Permission conflict on node 'm': permissions 'write' are both required by "
            "device 'vdb' (uses node 'm' as 'root' child) and unshared by device 'vda' (uses "
            "node 'm' as 'root' child).");
  // A reader that does not accept changing data is refused too; one that
  // shares write (share-rw) is fine, since the writer shares consistent read.
  auto strict = Drive::attach(engine_, "m", {.writable = false, .user = "reader"});
  ASSERT_FALSE(strict);
  auto reader =
      Drive::attach(engine_, "m", {.writable = false, .share_rw = true, .user = "reader"});
  ASSERT_TRUE(reader) << reader.error().message;
  (*reader)->close();
  (*first)->close();
  // Once the writer is gone, the second may write.
  auto third = Drive::attach(engine_, "m", {.writable = true, .user = "device 'vdb'"});
  ASSERT_TRUE(third);
  (*third)->close();
}

TEST_F(GraphTest, SharedWritersCoexist) {
  add({{"driver", "mem-a"}, {"node-name", "m"}});
  auto a = Drive::attach(engine_, "m", {.writable = true, .share_rw = true, .user = "a"});
  auto b = Drive::attach(engine_, "m", {.writable = true, .share_rw = true, .user = "b"});
  ASSERT_TRUE(a);
  ASSERT_TRUE(b) << b.error().message;
  (*a)->close();
  (*b)->close();
}

TEST_F(GraphTest, PermissionsPropagateThroughFormatNodes) {
  add({{"driver", "mem-a"}, {"node-name", "proto"}});
  Node* raw = add({{"driver", "raw"}, {"node-name", "fmt"}, {"file", "proto"}});
  Child* file = raw->file();
  EXPECT_EQ(file->perm(), 0u);  // nobody uses the format node yet
  auto d = Drive::attach(engine_, "fmt", {.writable = true});
  ASSERT_TRUE(d);
  EXPECT_EQ(file->perm() & kPermWrite, kPermWrite);
  EXPECT_EQ(file->shared() & kPermWrite, 0u);
  // The protocol node cannot get a second writer now.
  auto other = Drive::attach(engine_, "proto", {.writable = true, .user = "other"});
  ASSERT_FALSE(other);
  EXPECT_NE(other.error().message.find("unshared by node 'fmt'"), std::string::npos)
      << other.error().message;
  (*d)->close();
  EXPECT_EQ(file->perm(), 0u);
}

TEST_F(GraphTest, ReadOnlyNodesRefuseWriters) {
  add({{"driver", "mem-a"}, {"node-name", "ro"}, {"read-only", true}});
  auto w = Drive::attach(engine_, "ro", {.writable = true});
  ASSERT_FALSE(w);
  EXPECT_EQ(w.error().message, "Block node is read-only");
  auto r = Drive::attach(engine_, "ro", {.writable = false});
  ASSERT_TRUE(r);
  (*r)->close();
}

Task<void> co_delayed_write(Drive& d, uint64_t off, uint8_t byte) {
  std::vector<uint8_t> buf(4096, byte);
  auto r = co_await d.co_write(off, buf);
  EXPECT_TRUE(r) << r.error().message;
}

Task<void> co_replace_then_write(Engine& engine, Drive& d, MemState* a, int* a_in_flight_at_swap) {
  co_await engine.loop().co_sleep(1);  // let the first writes start
  auto r =
      co_await engine.graph().co_replace_node(*engine.graph().find("a"), *engine.graph().find("b"));
  EXPECT_TRUE(r) << r.error().message;
  *a_in_flight_at_swap = a->concurrent;
  co_await co_delayed_write(d, 8192, 0x22);
}

TEST_F(GraphTest, ReplaceNodeDrainsInFlightRequestsThenMovesParents) {
  a_.delay_ms = 20;
  add({{"driver", "mem-a"}, {"node-name", "a"}});
  add({{"driver", "mem-b"}, {"node-name", "b"}});
  auto d = Drive::attach(engine_, "a", {.writable = true});
  ASSERT_TRUE(d);
  int a_in_flight_at_swap = -1;
  TaskGroup group(engine_.loop());
  group.spawn(co_delayed_write(**d, 0, 0x11));
  group.spawn(co_delayed_write(**d, 4096, 0x11));
  group.spawn(co_replace_then_write(engine_, **d, &a_, &a_in_flight_at_swap));
  engine_.run(group.co_join());
  EXPECT_EQ(a_in_flight_at_swap, 0);
  EXPECT_EQ((*d)->node_name(), "b");
  EXPECT_EQ(a_.data[0], 0x11);  // the writes in flight finished on the old node
  EXPECT_EQ(a_.data[4096], 0x11);
  EXPECT_EQ(a_.data[8192], 0xAA);  // the later one went to the new node
  EXPECT_EQ(b_.data[8192], 0x22);
  EXPECT_EQ(b_.data[0], 0xBB);
  (*d)->close();
}

TEST_F(GraphTest, ReplaceNodeKeepsTheOverlaysOwnBackingEdge) {
  // Like blockdev-snapshot: the overlay takes over the parents of the base,
  // but its own edge to the base stays.
  add({{"driver", "mem-a"}, {"node-name", "base"}});
  Node* overlay = add({{"driver", "raw"}, {"node-name", "overlay"}, {"file", "base"}});
  auto d = Drive::attach(engine_, "base", {.writable = false, .user = "reader"});
  ASSERT_TRUE(d);
  ASSERT_TRUE(
      engine_.run(engine_.graph().co_replace_node(*engine_.graph().find("base"), *overlay)));
  EXPECT_EQ((*d)->node_name(), "overlay");
  EXPECT_EQ(overlay->file()->node()->name(), "base");
  (*d)->close();
}

// A Drive dropped without co_close() detaches in the background; its node's
// close suspends while it flushes. A shutdown meanwhile must wait for that
// close, not close (and free) the node a second time under it.
TEST_F(GraphTest, ShutdownWaitsForABackgroundCloseInsteadOfClosingTwice) {
  a_.delay_ms = 20;  // the close's flush suspends
  {
    auto d = engine_.run(Drive::co_open(engine_, {{"driver", "mem-a"}}, {.writable = true}));
    ASSERT_TRUE(d) << d.error().message;
  }
  EXPECT_EQ(engine_.graph().nodes().size(), 1u);  // its close is under way
  engine_.run(engine_.co_close_all());
  EXPECT_TRUE(engine_.graph().nodes().empty());
  auto flushes = std::count_if(a_.log.begin(), a_.log.end(),
                               [](const testing::MemRequest& r) { return r.op == 'f'; });
  EXPECT_EQ(flushes, 1);
}

// Two users of one implicit child let go of it at once: it is closed once.
TEST_F(GraphTest, AChildReleasedTwiceAtOnceIsClosedOnce) {
  a_.delay_ms = 20;
  Node* leaf = add({{"driver", "mem-a"}, {"node-name", "leaf"}});
  leaf->set_monitor_owned(false);  // as an implicit child: closed when unused
  auto edge =
      engine_.graph().attach_root(*leaf, "user", kPermConsistentRead | kPermWrite, kPermAll);
  ASSERT_TRUE(edge);
  TaskGroup group(engine_.loop());
  group.spawn(engine_.graph().co_detach(*edge));
  group.spawn(engine_.graph().co_release_if_unused(leaf));
  engine_.run(group.co_join());
  EXPECT_TRUE(engine_.graph().nodes().empty());
  auto flushes = std::count_if(a_.log.begin(), a_.log.end(),
                               [](const testing::MemRequest& r) { return r.op == 'f'; });
  EXPECT_EQ(flushes, 1);
}

TEST_F(GraphTest, CyclesAreRefused) {
  add({{"driver", "mem-a"}, {"node-name", "leaf"}});
  Node* top = add({{"driver", "raw"}, {"node-name", "top"}, {"file", "leaf"}});
  auto r = engine_.graph().attach_child(*engine_.graph().find("leaf"), *top, "file", kRoleImage);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("cycle"), std::string::npos);
}

}  // namespace
}  // namespace strata
