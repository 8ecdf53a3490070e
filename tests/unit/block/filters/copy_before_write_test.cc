// copy-before-write keeps a point-in-time view of its source: a guest write
// sends the old data of the clusters it touches to the target first (once
// per cluster), snapshot-access reads the view, the bitmap option narrows
// it, on-cbw-error and cbw-timeout decide what a failing copy does, and a
// discard through snapshot-access gives clusters back.
#include "block/filters/copy_before_write.h"

#include <gtest/gtest.h>

#include "strata/drive.h"
#include "unit/block/core/mem_driver.h"

namespace strata {
namespace {

using nlohmann::json;
using testing::MemState;

constexpr uint64_t kSize = 1 << 20;
constexpr uint64_t kCluster = 64 * 1024;

class CopyBeforeWriteTest : public ::testing::Test {
 protected:
  void SetUp() override {
    src_.data.resize(kSize);
    for (uint64_t i = 0; i < kSize; i++) src_.data[i] = static_cast<uint8_t>(i / 4096 + 1);
    tgt_.data.assign(kSize, 0);
    testing::register_mem_driver(engine_, &src_, "mem");
    testing::register_mem_driver(engine_, &tgt_, "memt");
    ASSERT_TRUE(add({{"driver", "mem"}, {"node-name", "src"}}));
    ASSERT_TRUE(add({{"driver", "memt"}, {"node-name", "tgt"}, {"discard", "unmap"}}));
  }
  void TearDown() override {
    drives_.clear();
    engine_.run(engine_.co_close_all());
  }
  Result<Node*> add(json options) { return engine_.run(engine_.graph().co_add(options)); }
  // A fault filter `name` over the target with one rule for its writes.
  Result<Node*> add_target_fault(const std::string& name, json rule) {
    rule["event"] = "write";
    return add({{"driver", "fault"}, {"node-name", name}, {"file", "tgt"}, {"rules", {rule}}});
  }
  // The filter over src with `extra` options, and a guest drive on it.
  Drive* open_cbw(json extra = json::object(), const std::string& target = "tgt") {
    json o = {{"driver", "copy-before-write"}, {"node-name", "cbw"}, {"file", "src"}};
    o["target"] = target;
    o.update(extra);
    auto n = add(o);
    EXPECT_TRUE(n) << n.error().message;
    if (!n) return nullptr;
    return attach("cbw", true);
  }
  Drive* attach(const std::string& node, bool writable) {
    auto d = Drive::attach(engine_, node, {.writable = writable});
    EXPECT_TRUE(d) << d.error().message;
    if (!d) return nullptr;
    drives_.push_back(std::move(*d));
    return drives_.back().get();
  }
  // The view, through a drive that may discard (writes are refused).
  Drive* open_access() {
    auto n = add({{"driver", "snapshot-access"},
                  {"node-name", "acc"},
                  {"file", "cbw"},
                  {"discard", "unmap"}});
    EXPECT_TRUE(n) << n.error().message;
    return n ? attach("acc", true) : nullptr;
  }
  size_t target_writes() const {
    size_t n = 0;
    for (const auto& r : tgt_.log) n += r.op == 'w' || r.op == 'z';
    return n;
  }
  static uint8_t original(uint64_t offset) { return static_cast<uint8_t>(offset / 4096 + 1); }

  Engine engine_;
  MemState src_, tgt_;
  std::vector<std::unique_ptr<Drive>> drives_;
};

TEST_F(CopyBeforeWriteTest, AGuestWriteCopiesTheOldClusterOnceAndThenGoesThrough) {
  Drive* guest = open_cbw();
  ASSERT_TRUE(guest);
  std::vector<uint8_t> buf(512, 0xEE);
  ASSERT_TRUE(guest->write(kCluster + 4096, buf));
  EXPECT_EQ(src_.data[kCluster + 4096], 0xEE);
  // The whole cluster's old data is in the target, nothing else.
  for (uint64_t off = kCluster; off < 2 * kCluster; off += 4096) {
    EXPECT_EQ(tgt_.data[off], original(off)) << off;
  }
  EXPECT_EQ(tgt_.data[0], 0);
  EXPECT_EQ(tgt_.data[2 * kCluster], 0);
  size_t writes = target_writes();
  ASSERT_TRUE(guest->write(kCluster, buf));  // same cluster: no second copy
  ASSERT_TRUE(guest->write_zeroes(kCluster + 8192, 4096));
  EXPECT_EQ(target_writes(), writes);
  // Reads pass through to the live source.
  std::vector<uint8_t> got(512);
  ASSERT_TRUE(guest->read(kCluster + 4096, got));
  EXPECT_EQ(got[0], 0xEE);
}

TEST_F(CopyBeforeWriteTest, SnapshotAccessReadsThePointInTimeWhileTheGuestWrites) {
  Drive* guest = open_cbw();
  Drive* view = open_access();
  ASSERT_TRUE(guest && view);
  std::vector<uint8_t> buf(3 * kCluster, 0xAB);
  ASSERT_TRUE(guest->write(kCluster / 2, buf));  // parts of four clusters
  std::vector<uint8_t> got(kSize);
  ASSERT_TRUE(view->read(0, got));
  for (uint64_t off = 0; off < kSize; off += 4096) ASSERT_EQ(got[off], original(off)) << off;
  ASSERT_TRUE(guest->read(0, got));
  EXPECT_EQ(got[kCluster], 0xAB);
  // Writes through the view are refused.
  auto w = view->write(0, std::span<const uint8_t>(buf.data(), 512));
  EXPECT_FALSE(w);
}

TEST_F(CopyBeforeWriteTest, TheSourceTakesNoOtherWriterOnceTheFilterHasUsers) {
  ASSERT_TRUE(open_cbw());
  auto other = Drive::attach(engine_, "src", {.writable = true});
  EXPECT_FALSE(other);
}

TEST_F(CopyBeforeWriteTest, TheBitmapOptionLimitsTheViewAndTheCopies) {
  auto bm = engine_.graph().find("src")->bitmaps().create(kCluster, "b0");
  ASSERT_TRUE(bm);
  (*bm)->bits().set(2 * kCluster, kCluster);
  Drive* guest = open_cbw({{"bitmap", {{"node", "src"}, {"name", "b0"}}}});
  Drive* view = open_access();
  ASSERT_TRUE(guest && view);
  std::vector<uint8_t> buf(4096, 0x11);
  ASSERT_TRUE(guest->write(0, buf));  // outside the bitmap: no copy
  EXPECT_EQ(target_writes(), 0u);
  ASSERT_TRUE(guest->write(2 * kCluster, buf));
  EXPECT_EQ(target_writes(), 1u);
  std::vector<uint8_t> got(kCluster);
  ASSERT_TRUE(view->read(2 * kCluster, got));
  EXPECT_EQ(got[0], original(2 * kCluster));
  auto r = view->read(0, got);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EACCES);
}

TEST_F(CopyBeforeWriteTest, BreakGuestWriteFailsTheWriteAndKeepsTheView) {
  ASSERT_TRUE(add_target_fault("bad", {{"errno", "EIO"}}));
  Drive* guest = open_cbw(json::object(), "bad");
  Drive* view = open_access();
  ASSERT_TRUE(guest && view);
  std::vector<uint8_t> buf(4096, 0x22);
  auto r = guest->write(0, buf);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EIO);
  EXPECT_EQ(src_.data[0], original(0));  // the source was not touched
  std::vector<uint8_t> got(4096);
  ASSERT_TRUE(view->read(0, got));
  EXPECT_EQ(got[0], original(0));
}

TEST_F(CopyBeforeWriteTest, BreakSnapshotLetsTheWriteThroughAndFailsLaterViewReads) {
  ASSERT_TRUE(add_target_fault("bad", {{"errno", "EIO"}}));
  Drive* guest = open_cbw({{"on-cbw-error", "break-snapshot"}}, "bad");
  Drive* view = open_access();
  ASSERT_TRUE(guest && view);
  std::vector<uint8_t> buf(4096, 0x33);
  ASSERT_TRUE(guest->write(0, buf));
  EXPECT_EQ(src_.data[0], 0x33);
  std::vector<uint8_t> got(4096);
  auto r = view->read(4 * kCluster, got);  // even a cluster never written
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EACCES);
}

TEST_F(CopyBeforeWriteTest, ACopySlowerThanCbwTimeoutFailsTheGuestWrite) {
  ASSERT_TRUE(add_target_fault("slow", {{"errno", 0}, {"delay-ms", 2500}}));
  Drive* guest = open_cbw({{"cbw-timeout", 1}}, "slow");
  ASSERT_TRUE(guest);
  std::vector<uint8_t> buf(4096, 0x44);
  auto r = guest->write(0, buf);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ETIMEDOUT);
  EXPECT_EQ(src_.data[0], original(0));
  // The copy went on in the background and completed: the filter closes
  // only after it (TearDown), and the target has the old data.
  drives_.clear();
  engine_.run(engine_.co_close_all());
  EXPECT_EQ(tgt_.data[0], original(0));
}

TEST_F(CopyBeforeWriteTest, DiscardThroughTheViewDropsClustersFromIt) {
  Drive* guest = open_cbw();
  Drive* view = open_access();
  ASSERT_TRUE(guest && view);
  std::vector<uint8_t> buf(4096, 0x55);
  ASSERT_TRUE(guest->write(0, buf));  // cluster 0 copied
  ASSERT_TRUE(view->discard(0, 2 * kCluster));
  std::vector<uint8_t> got(4096);
  auto r = view->read(kCluster, got);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EACCES);
  bool discarded = false;
  for (const auto& req : tgt_.log) discarded |= req.op == 'd' && req.offset == 0;
  EXPECT_TRUE(discarded);
  size_t writes = target_writes();
  ASSERT_TRUE(guest->write(kCluster, buf));  // no longer in the view: no copy
  EXPECT_EQ(target_writes(), writes);
  ASSERT_TRUE(view->read(2 * kCluster, got));  // the rest still reads
  EXPECT_EQ(got[0], original(2 * kCluster));
}

TEST_F(CopyBeforeWriteTest, BadOptionsAreRefused) {
  auto n = add({{"driver", "copy-before-write"},
                {"node-name", "c"},
                {"file", "src"},
                {"target", "tgt"},
                {"min-cluster-size", 3000}});
  ASSERT_FALSE(n);
  EXPECT_EQ(n.error().message, "min-cluster-size needs to be a power of 2");
  n = add({{"driver", "copy-before-write"},
           {"node-name", "c"},
           {"file", "src"},
           {"target", "tgt"},
           {"on-cbw-error", "explode"}});
  ASSERT_FALSE(n);
  n = add({{"driver", "copy-before-write"},
           {"node-name", "c"},
           {"file", "src"},
           {"target", "tgt"},
           {"bitmap", {{"node", "src"}, {"name", "nope"}}}});
  ASSERT_FALSE(n);
  EXPECT_EQ(n.error().message, "Dirty bitmap 'nope' not found");
  n = add({{"driver", "snapshot-access"}, {"node-name", "a"}, {"file", "src"}});
  ASSERT_FALSE(n);
  EXPECT_EQ(engine_.graph().find("c"), nullptr);
}

}  // namespace
}  // namespace strata
