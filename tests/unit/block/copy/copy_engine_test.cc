// The copy engine with the block copier: chunks in parallel, status-driven
// skipping and zeroing, errors retried or fatal, cancellation, live work.
#include "block/copy/copy_engine.h"

#include <gtest/gtest.h>

#include "block/copy/block_copier.h"
#include "unit/block/bitmap/layer_driver.h"
#include "unit/block/core/mem_driver.h"

namespace strata {
namespace {

using testing::LayerState;
using testing::MemState;

class TestListener final : public CopyListener {
 public:
  Task<bool> co_before_chunk() override {
    chunks++;
    co_return !(cancel_after && chunks > cancel_after);
  }
  Task<ChunkErrorStep> co_on_error(Error e, bool read_failed) override {
    errors.push_back({e.message, read_failed});
    if (skip) co_return ChunkErrorStep::kSkip;
    co_return errors.size() <= retries ? ChunkErrorStep::kRetry : ChunkErrorStep::kStop;
  }
  void on_progress(uint64_t bytes) override { progress += bytes; }

  size_t chunks = 0;
  size_t cancel_after = 0;
  size_t retries = 0;
  bool skip = false;
  std::vector<std::pair<std::string, bool>> errors;
  uint64_t progress = 0;
};

class CopyEngineTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kSize = 4 << 20;
  void SetUp() override {
    src_.data.resize(kSize);
    for (size_t i = 0; i < kSize; i++) src_.data[i] = static_cast<uint8_t>(i * 7 + i / 4096);
    dst_.data.assign(kSize, 0xEE);
    testing::register_mem_driver(engine_, &src_, "mem-src");
    testing::register_mem_driver(engine_, &dst_, "mem-dst");
    layer_.size = kSize;
    testing::register_layer_driver(engine_, &layer_, "layer");
  }
  void TearDown() override {
    for (Child* c : edges_) engine_.run(engine_.graph().co_detach(c));
    engine_.run(engine_.co_close_all());
  }
  Node* add(nlohmann::json o) {
    auto n = engine_.run(engine_.graph().co_add(std::move(o)));
    EXPECT_TRUE(n) << n.error().message;
    return n ? *n : nullptr;
  }
  Child* edge(Node* n, bool write) {
    auto c = engine_.graph().attach_root(*n, "test", kPermConsistentRead | (write ? kPermWrite : 0),
                                         kPermAll);
    EXPECT_TRUE(c) << c.error().message;
    edges_.push_back(*c);
    return *c;
  }
  Result<void> run(ChunkCopier& copier, HBitmap& work, CopyConfig config = {}) {
    CopyEngine engine(engine_.loop(), copier, listener_, config);
    return engine_.run(engine.co_run(work));
  }

  // A copier from a source whose reads at `offset` always fail (EIO) to a
  // memory target.
  BlockCopier copier_reading_fault_at(uint64_t offset) {
    add({{"driver", "mem-src"}, {"node-name", "s0"}});
    Node* faulty = add({{"driver", "fault"},
                        {"node-name", "s"},
                        {"file", "s0"},
                        {"rules", {{{"event", "read"}, {"offset", offset}, {"length", 1}}}}});
    Child* s = edge(faulty, false);
    Child* t = edge(add({{"driver", "mem-dst"}, {"node-name", "t"}}), true);
    return BlockCopier(*s, *t, {.max_chunk = 65536}, nullptr);
  }

  Engine engine_;
  MemState src_, dst_;
  LayerState layer_;
  TestListener listener_;
  std::vector<Child*> edges_;
};

TEST_F(CopyEngineTest, CopiesEveryMarkedRangeWithBoundedParallelism) {
  src_.delay_ms = 1;
  Child* s = edge(add({{"driver", "mem-src"}, {"node-name", "s"}}), false);
  Child* t = edge(add({{"driver", "mem-dst"}, {"node-name", "t"}}), true);
  BlockCopier copier(*s, *t, {.max_chunk = 256 << 10}, nullptr);
  HBitmap work(kSize, 16);  // 64 KiB granularity
  work.set(0, 1 << 20);
  work.set(2 << 20, 64 << 10);
  ASSERT_TRUE(run(copier, work, {.max_chunk = 256 << 10, .max_workers = 3}));
  EXPECT_TRUE(work.empty());
  EXPECT_LE(src_.peak_concurrent, 3);
  EXPECT_GE(src_.peak_concurrent, 2);
  EXPECT_TRUE(std::equal(src_.data.begin(), src_.data.begin() + (1 << 20), dst_.data.begin()));
  EXPECT_TRUE(std::equal(src_.data.begin() + (2 << 20), src_.data.begin() + (2 << 20) + 65536,
                         dst_.data.begin() + (2 << 20)));
  EXPECT_EQ(dst_.data[1 << 20], 0xEE);  // unmarked: untouched
  EXPECT_EQ(listener_.progress, (1u << 20) + 65536);
  EXPECT_EQ(copier.bytes_copied(), (1u << 20) + 65536);
  for (const auto& r : src_.log) EXPECT_LE(r.bytes, 256u << 10);
}

TEST_F(CopyEngineTest, ZeroRangesAreWrittenAsZeroesOrSkippedAndUnallocatedOnesCanBeSkipped) {
  Node* top = add({{"driver", "layer"}, {"node-name", "top"}});
  layer_.allocate(0, 65536, true);  // data; the rest reads as zeroes
  Child* s = edge(top, false);
  Child* t = edge(add({{"driver", "mem-dst"}, {"node-name", "t"}}), true);
  {
    BlockCopier copier(*s, *t, {}, nullptr);
    HBitmap work(kSize, 16);
    work.set(0, 4 * 65536);
    ASSERT_TRUE(run(copier, work));
    std::vector<char> ops;
    for (const auto& r : dst_.log) ops.push_back(r.op);
    EXPECT_EQ(ops, (std::vector<char>{'w', 'z'}));
    EXPECT_EQ(copier.bytes_copied(), 65536u);
  }
  dst_.log.clear();
  {
    ZeroMap zeroes(kSize, 16);
    BlockCopier copier(*s, *t, {.target_zeroes = &zeroes}, nullptr);
    HBitmap work(kSize, 16);
    work.set(0, 4 * 65536);
    ASSERT_TRUE(run(copier, work));
    ASSERT_EQ(dst_.log.size(), 1u);  // zeroes skipped on a zeroed target
    EXPECT_EQ(dst_.log[0].op, 'w');
    EXPECT_FALSE(zeroes.reads_zero(0, 1));  // data went there
    EXPECT_TRUE(zeroes.reads_zero(65536, 3 * 65536));
    // Once the source reads as zeroes where data was copied, the zeroes
    // are written: the target no longer reads so there.
    layer_.allocate(0, 65536, false);
    dst_.log.clear();
    work.set(0, 65536);
    ASSERT_TRUE(run(copier, work));
    ASSERT_EQ(dst_.log.size(), 1u);
    EXPECT_EQ(dst_.log[0].op, 'z');
  }
  dst_.log.clear();
  {
    BlockCopier copier(*s, *t, {.skip_unallocated = true}, nullptr);
    HBitmap work(kSize, 16);
    work.set(65536, 65536);
    ASSERT_TRUE(run(copier, work));
    EXPECT_TRUE(dst_.log.empty());  // unallocated above the (absent) base
    EXPECT_EQ(listener_.progress, 4 * 65536u + 4 * 65536u + 65536u + 65536u);
  }
}

TEST_F(CopyEngineTest, AFailedChunkIsRetriedOnALaterPassWhenTheListenerCarriesOn) {
  add({{"driver", "mem-dst"}, {"node-name", "t0"}});
  Node* faulty = add({{"driver", "fault"},
                      {"node-name", "t"},
                      {"file", "t0"},
                      {"rules",
                       {{{"event", "write"},
                         {"offset", 131072},
                         {"length", 1},
                         {"errno", "ENOSPC"},
                         {"count", 1}}}}});
  Child* s = edge(add({{"driver", "mem-src"}, {"node-name", "s"}}), false);
  Child* t = edge(faulty, true);
  BlockCopier copier(*s, *t, {.max_chunk = 65536}, nullptr);
  HBitmap work(kSize, 16);
  work.set(0, 4 * 65536);
  listener_.retries = 1;
  ASSERT_TRUE(run(copier, work, {.max_chunk = 65536, .max_workers = 2}));
  ASSERT_EQ(listener_.errors.size(), 1u);
  EXPECT_FALSE(listener_.errors[0].second);  // a write error
  EXPECT_TRUE(std::equal(src_.data.begin(), src_.data.begin() + 4 * 65536, dst_.data.begin()));
  EXPECT_EQ(listener_.progress, 4 * 65536u);
}

TEST_F(CopyEngineTest, AnErrorTheListenerDoesNotAcceptStopsTheCopyWithItsRangeStillMarked) {
  BlockCopier copier = copier_reading_fault_at(65536);
  HBitmap work(kSize, 16);
  work.set(0, 8 * 65536);
  auto r = run(copier, work, {.max_chunk = 65536, .max_workers = 1});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EIO);
  ASSERT_EQ(listener_.errors.size(), 1u);
  EXPECT_TRUE(listener_.errors[0].second);  // a read error
  EXPECT_TRUE(work.get(65536));
  EXPECT_FALSE(work.get(0));
}

TEST_F(CopyEngineTest, AChunkTheListenerSkipsIsDroppedAndCountedAsDone) {
  BlockCopier copier = copier_reading_fault_at(65536);
  HBitmap work(kSize, 16);
  work.set(0, 4 * 65536);
  listener_.skip = true;
  ASSERT_TRUE(run(copier, work, {.max_chunk = 65536, .max_workers = 2}));
  ASSERT_EQ(listener_.errors.size(), 1u);  // not retried
  EXPECT_TRUE(work.empty());
  EXPECT_EQ(listener_.progress, 4 * 65536u);
  EXPECT_TRUE(std::equal(src_.data.begin(), src_.data.begin() + 65536, dst_.data.begin()));
  EXPECT_TRUE(std::equal(src_.data.begin() + 2 * 65536, src_.data.begin() + 4 * 65536,
                         dst_.data.begin() + 2 * 65536));
}

TEST_F(CopyEngineTest, CancellationWaitsForTheChunksInFlight) {
  src_.delay_ms = 2;
  Child* s = edge(add({{"driver", "mem-src"}, {"node-name", "s"}}), false);
  Child* t = edge(add({{"driver", "mem-dst"}, {"node-name", "t"}}), true);
  BlockCopier copier(*s, *t, {.max_chunk = 65536}, nullptr);
  HBitmap work(kSize, 16);
  work.set_all();
  listener_.cancel_after = 3;
  auto r = run(copier, work, {.max_chunk = 65536, .max_workers = 2});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ECANCELED);
  EXPECT_EQ(listener_.progress, 3 * 65536u);  // all three finished
  EXPECT_EQ(src_.concurrent, 0);
}

Task<void> co_mark_later(Loop& loop, HBitmap* work) {
  co_await loop.co_sleep(3);
  work->set(3 << 20, 65536);
}

TEST_F(CopyEngineTest, RangesMarkedWhileTheCopyRunsAreCopiedToo) {
  src_.delay_ms = 2;
  Child* s = edge(add({{"driver", "mem-src"}, {"node-name", "s"}}), false);
  Child* t = edge(add({{"driver", "mem-dst"}, {"node-name", "t"}}), true);
  BlockCopier copier(*s, *t, {.max_chunk = 65536}, nullptr);
  HBitmap work(kSize, 16);
  work.set(0, 4 * 65536);
  engine_.loop().spawn(co_mark_later(engine_.loop(), &work));
  ASSERT_TRUE(run(copier, work, {.max_chunk = 65536, .max_workers = 1}));
  EXPECT_EQ(dst_.data[3 << 20], src_.data[3 << 20]);
  EXPECT_EQ(listener_.progress, 5 * 65536u);
}

}  // namespace
}  // namespace strata
