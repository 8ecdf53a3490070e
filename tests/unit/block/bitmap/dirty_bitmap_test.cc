// DirtyBitmap, BitmapSet and the block-dirty-bitmap-* operations on real
// nodes: dirty marking through the dispatcher, resize, successors and the
// bitmap-mode semantics of jobs, and QEMU's checks and messages.
#include "block/bitmap/dirty_bitmap.h"

#include <gtest/gtest.h>

#include <random>

#include "block/bitmap/bitmap_ops.h"
#include "block/core/graph.h"
#include "strata/drive.h"
#include "unit/block/bitmap/layer_driver.h"

namespace strata {
namespace {

using testing::LayerState;
using testing::register_layer_driver;

class DirtyBitmapTest : public ::testing::Test {
 protected:
  void SetUp() override {
    top_.size = 8 << 20;
    base_.size = 8 << 20;
    register_layer_driver(engine_, &top_, "layer");
    register_layer_driver(engine_, &base_, "baselayer");
  }
  // Opens "base" and "top" (backed by base) and a Drive on top.
  void open() {
    auto b = engine_.run(engine_.graph().co_add({{"driver", "baselayer"}, {"node-name", "base"}}));
    ASSERT_TRUE(b) << b.error().message;
    auto d = engine_.run(Drive::co_open(
        engine_,
        {{"driver", "layer"}, {"node-name", "top"}, {"backing", "base"}, {"discard", "unmap"}}));
    ASSERT_TRUE(d) << d.error().message;
    drive_ = std::move(*d);
    node_ = engine_.graph().find("top");
  }
  void TearDown() override {
    if (drive_) drive_->close();
  }
  DirtyBitmap* add(const std::string& name, BitmapAddOptions o = {}) {
    auto r = engine_.run(co_add_bitmap(engine_.graph(), "top", name, o));
    EXPECT_TRUE(r) << r.error().message;
    return r ? *r : nullptr;
  }
  std::string add_error(const std::string& node, const std::string& name, BitmapAddOptions o = {}) {
    auto r = engine_.run(co_add_bitmap(engine_.graph(), node, name, o));
    return r ? "ok" : r.error().message;
  }
  void write(uint64_t off, uint64_t len) {
    std::vector<uint8_t> buf(len, 1);
    ASSERT_TRUE(drive_->write(off, buf));
  }
  std::vector<BitmapExtent> extents(const DirtyBitmap& b) {
    std::vector<BitmapExtent> out;
    b.bits().for_each_dirty_extent([&](const BitmapExtent& e) { out.push_back(e); });
    return out;
  }
  Graph& graph() { return engine_.graph(); }

  Engine engine_;
  LayerState top_, base_;
  std::unique_ptr<Drive> drive_;
  Node* node_ = nullptr;
};

TEST_F(DirtyBitmapTest, WritesZeroesAndDiscardsMarkRecordingBitmaps) {
  open();
  DirtyBitmap* a = add("a", {.granularity = 65536});
  DirtyBitmap* b = add("b", {.granularity = 512});
  DirtyBitmap* off = add("off", {.granularity = 512, .disabled = true});
  write(100, 1000);
  ASSERT_TRUE(drive_->write_zeroes(1 << 20, 4096));
  ASSERT_TRUE(drive_->discard(3 << 20, 512));
  EXPECT_EQ(extents(*a),
            (std::vector<BitmapExtent>{{0, 65536}, {1 << 20, 65536}, {3 << 20, 65536}}));
  EXPECT_EQ(extents(*b), (std::vector<BitmapExtent>{{0, 1536}, {1 << 20, 4096}, {3 << 20, 512}}));
  EXPECT_EQ(a->count(), 3u * 65536);
  EXPECT_EQ(b->count(), 1536u + 4096 + 512);
  EXPECT_EQ(off->count(), 0u);
  EXPECT_FALSE(off->recording());
  // A failed write marks nothing.
  top_.fail_writes = true;
  std::vector<uint8_t> buf(512, 1);
  EXPECT_FALSE(drive_->write(5 << 20, buf));
  EXPECT_FALSE(b->bits().get(5 << 20));
}

// A bitmap that screens out one edge records every other edge's writes
// (and the dispatcher's own, from no edge), and the other bitmaps record
// everything, that edge's writes included.
TEST_F(DirtyBitmapTest, UnrecordedWriterIsScreenedOutOfOneBitmapOnly) {
  open();
  DirtyBitmap* job = add("job", {.granularity = 65536});
  DirtyBitmap* user = add("user", {.granularity = 65536});
  job->set_unrecorded_writer(drive_->edge());
  EXPECT_TRUE(job->recording());
  write(0, 4096);  // through the screened edge
  ASSERT_TRUE(drive_->write_zeroes(2 << 20, 4096));
  const Child* other = node_->backing();  // any other edge
  node_->bitmaps().mark(1 << 20, 4096, other);
  node_->bitmaps().mark(5 << 20, 4096, nullptr);
  EXPECT_EQ(extents(*job), (std::vector<BitmapExtent>{{1 << 20, 65536}, {5 << 20, 65536}}));
  EXPECT_EQ(extents(*user), (std::vector<BitmapExtent>{
                                {0, 65536}, {1 << 20, 65536}, {2 << 20, 65536}, {5 << 20, 65536}}));
  // Screened or not, a disabled bitmap records nothing.
  job->set_enabled(false);
  node_->bitmaps().mark(3 << 20, 4096, other);
  EXPECT_FALSE(job->bits().get(3 << 20));
  job->set_enabled(true);
  job->set_unrecorded_writer(nullptr);
  write(4 << 20, 4096);
  EXPECT_TRUE(job->bits().get(4 << 20));
}

TEST_F(DirtyBitmapTest, RandomWritesMatchModelAtSeveralGranularities) {
  open();
  std::vector<DirtyBitmap*> bitmaps;
  for (uint64_t g : {512u, 4096u, 65536u, 1u << 20}) {
    bitmaps.push_back(add("g" + std::to_string(g), {.granularity = g}));
  }
  std::mt19937_64 rng(11);
  std::vector<bool> dirty_bytes_model(top_.size / 512, false);  // per sector
  for (int i = 0; i < 200; i++) {
    uint64_t off = rng() % (top_.size - 70000), len = rng() % 70000 + 1;
    write(off, len);
    for (uint64_t s = off / 512; s <= (off + len - 1) / 512; s++) dirty_bytes_model[s] = true;
  }
  for (DirtyBitmap* b : bitmaps) {
    uint64_t g = b->granularity();
    for (uint64_t start = 0; start < top_.size; start += g) {
      bool any = false;
      for (uint64_t s = start / 512; s < (start + g) / 512; s++) any = any || dirty_bytes_model[s];
      ASSERT_EQ(b->bits().get(start), any) << g << " at " << start;
    }
  }
}

// With several bitmaps of one granularity, mark() remembers granules dirty
// in all of them; clearing any of them, a resize, or a change of the
// recording set must make the next write mark again.
TEST_F(DirtyBitmapTest, WritesMarkAgainAfterClearResizeAndEnable) {
  open();
  DirtyBitmap* a = add("a", {.granularity = 4096});
  DirtyBitmap* b = add("b", {.granularity = 4096});
  DirtyBitmap* c = add("c", {.granularity = 4096, .disabled = true});
  write(8192, 512);
  write(8192, 512);  // answered by the summary
  ASSERT_TRUE(clear_bitmap(graph(), "top", "a", nullptr));
  write(8192, 512);
  EXPECT_TRUE(a->bits().get(8192));
  b->bits().reset(8192, 4096);  // a direct reset through bits()
  write(8192, 512);
  EXPECT_TRUE(b->bits().get(8192));
  ASSERT_TRUE(enable_bitmap(graph(), "top", "c", true));
  write(8192, 512);
  EXPECT_TRUE(c->bits().get(8192));
  // Shrinking drops the granule, growing brings it back clean.
  ASSERT_TRUE(engine_.run(drive_->co_resize(4096)));
  ASSERT_TRUE(engine_.run(drive_->co_resize(8 << 20)));
  write(8192, 512);
  for (DirtyBitmap* x : {a, b, c}) EXPECT_EQ(x->count(), 4096u) << x->name();
}

// Randomized: three bitmaps of one granularity (summary on) and one of
// another, with random clears between writes, against a model.
TEST_F(DirtyBitmapTest, SummaryNeverHidesAWriteAfterAClear) {
  open();
  std::vector<DirtyBitmap*> same;
  for (int i = 0; i < 3; i++) same.push_back(add("s" + std::to_string(i), {.granularity = 65536}));
  DirtyBitmap* other = add("o", {.granularity = 512});
  std::mt19937_64 rng(5);
  std::vector<std::vector<bool>> model(3, std::vector<bool>(top_.size / 65536, false));
  for (int i = 0; i < 3000; i++) {
    uint64_t off = rng() % (top_.size - 8192), len = rng() % 8192 + 1;
    if (rng() % 8 == 0) {
      size_t k = rng() % 3;
      uint64_t g = rng() % model[k].size();
      same[k]->bits().reset(g * 65536, 65536);
      model[k][g] = false;
      continue;
    }
    write(off, len);
    for (auto& m : model) {
      for (uint64_t g = off / 65536; g <= (off + len - 1) / 65536; g++) m[g] = true;
    }
  }
  for (size_t k = 0; k < 3; k++) {
    for (uint64_t g = 0; g < model[k].size(); g++) {
      ASSERT_EQ(same[k]->bits().get(g * 65536), model[k][g]) << k << " granule " << g;
    }
  }
  EXPECT_GT(other->count(), 0u);
}

TEST_F(DirtyBitmapTest, BitmapsFollowResize) {
  open();
  DirtyBitmap* a = add("a", {.granularity = 65536});
  write(0, 512);
  ASSERT_TRUE(engine_.run(drive_->co_resize(16 << 20)));
  EXPECT_EQ(a->size(), 16u << 20);
  write((16 << 20) - 512, 512);
  EXPECT_EQ(a->count(), 2u * 65536);
  ASSERT_TRUE(engine_.run(drive_->co_resize(1 << 20)));
  EXPECT_EQ(a->size(), 1u << 20);
  EXPECT_EQ(a->count(), 65536u);
}

TEST_F(DirtyBitmapTest, AddChecksAndMessagesAsQemu) {
  open();
  EXPECT_EQ(add_error("top", ""), "Bitmap name cannot be empty");
  EXPECT_EQ(add_error("nope", "x"), "Cannot find device='nope' nor node-name='nope'");
  EXPECT_EQ(add_error("top", "x", {.granularity = 1000}),
            "Granularity must be power of 2 and at least 512");
  EXPECT_EQ(add_error("top", "x", {.granularity = 256}),
            "Granularity must be power of 2 and at least 512");
  EXPECT_EQ(add_error("top", "x", {.granularity = std::nullopt, .persistent = true}),
            "Can't store persistent bitmaps to top: Operation not supported");
  add("x");
  EXPECT_EQ(add_error("top", "x"), "Bitmap already exists: x");
  std::string long_name(1024, 'n');
  EXPECT_EQ(add_error("top", long_name), "Bitmap name too long: " + long_name);
  EXPECT_EQ(add_error("top", std::string(1023, 'n')), "ok");
  EXPECT_EQ(add_error("top", "big", {.granularity = uint64_t{1} << 31}), "ok");
  // Default granularity: the format's cluster size clamped to 4K..64K.
  EXPECT_EQ(graph().find("top")->bitmaps().find("x")->granularity(), 65536u);
  top_.cluster_size = 512;
  EXPECT_EQ(add("small")->granularity(), 4096u);
  top_.cluster_size = 16384;
  EXPECT_EQ(add("mid")->granularity(), 16384u);
  top_.cluster_size = 2 << 20;
  EXPECT_EQ(add("huge")->granularity(), 65536u);
}

TEST_F(DirtyBitmapTest, StateChecksAsQemu) {
  open();
  DirtyBitmap* b = add("b");
  b->set_busy(true);
  EXPECT_EQ(clear_bitmap(graph(), "top", "b").error().message,
            "Bitmap 'b' is currently in use by another operation and cannot be used");
  EXPECT_EQ(enable_bitmap(graph(), "top", "b", false).error().message,
            "Bitmap 'b' is currently in use by another operation and cannot be used");
  EXPECT_FALSE(engine_.run(co_remove_bitmap(graph(), "top", "b")));
  b->set_busy(false);
  b->set_read_only(true);
  EXPECT_EQ(clear_bitmap(graph(), "top", "b").error().message,
            "Bitmap 'b' is readonly and cannot be modified");
  EXPECT_TRUE(enable_bitmap(graph(), "top", "b", false));  // ALLOW_RO
  EXPECT_FALSE(b->enabled());
  EXPECT_EQ(engine_.run(co_remove_bitmap(graph(), "top", "b")).error().message,
            "Bitmap 'b' is readonly and cannot be modified");
  b->set_read_only(false);
  b->set_inconsistent();
  EXPECT_EQ(clear_bitmap(graph(), "top", "b").error().message,
            "Bitmap 'b' is inconsistent and cannot be used");
  EXPECT_EQ(enable_bitmap(graph(), "top", "b", true).error().message,
            "Bitmap 'b' is inconsistent and cannot be used");
  EXPECT_EQ(b->query_info()["inconsistent"], true);
  // Inconsistent bitmaps can be removed.
  EXPECT_TRUE(engine_.run(co_remove_bitmap(graph(), "top", "b")));
  EXPECT_EQ(lookup_bitmap(graph(), "top", "b").error().message, "Dirty bitmap 'b' not found");
  EXPECT_EQ(lookup_bitmap(graph(), "zz", "b").error().message, "Node 'zz' not found");
  EXPECT_TRUE(query_bitmaps(*node_).is_null());
}

TEST_F(DirtyBitmapTest, ClearAndMergeBackupsRestore) {
  open();
  DirtyBitmap* a = add("a", {.granularity = 512});
  DirtyBitmap* b = add("b", {.granularity = 4096, .disabled = true});
  write(0, 512);
  b->bits().set(1 << 20, 1);
  std::optional<HBitmap> backup;
  ASSERT_TRUE(clear_bitmap(graph(), "top", "a", &backup));
  EXPECT_EQ(a->count(), 0u);
  restore_bitmap(*a, std::move(*backup));
  EXPECT_EQ(a->count(), 512u);
  std::string before = a->bits().sha256_hex();
  backup.reset();
  ASSERT_TRUE(merge_bitmaps(graph(), "top", "a", {{"", "b"}}, &backup));
  EXPECT_TRUE(a->bits().get(1 << 20));
  EXPECT_EQ(a->count(), 512u + 4096);  // other granularity: whole source granules
  restore_bitmap(*a, std::move(*backup));
  EXPECT_EQ(a->bits().sha256_hex(), before);
}

TEST_F(DirtyBitmapTest, MergeAcrossNodesAndErrorsLeaveTargetUnchanged) {
  open();
  DirtyBitmap* a = add("a");
  auto on_base = engine_.run(co_add_bitmap(graph(), "base", "c", {}));
  ASSERT_TRUE(on_base);
  (*on_base)->bits().set(2 << 20, 1);
  write(0, 1);
  std::string before = a->bits().sha256_hex();
  EXPECT_EQ(merge_bitmaps(graph(), "top", "a", {{"base", "c"}, {"", "zz"}}).error().message,
            "Dirty bitmap 'zz' not found");
  EXPECT_EQ(merge_bitmaps(graph(), "top", "a", {{"nx", "c"}}).error().message,
            "Node 'nx' not found");
  (*on_base)->set_busy(true);
  EXPECT_EQ(merge_bitmaps(graph(), "top", "a", {{"base", "c"}}).error().message,
            "Bitmap 'c' is currently in use by another operation and cannot be used");
  (*on_base)->set_busy(false);
  EXPECT_EQ(a->bits().sha256_hex(), before);
  ASSERT_TRUE(merge_bitmaps(graph(), "top", "a", {{"base", "c"}}));
  EXPECT_TRUE(a->bits().get(2 << 20));
  EXPECT_TRUE((*on_base)->bits().get(2 << 20));  // sources unchanged
  // Different sizes are refused.
  ASSERT_TRUE(engine_.run(drive_->co_resize(1 << 20)));
  EXPECT_EQ(merge_bitmaps(graph(), "top", "a", {{"base", "c"}}).error().message,
            "Bitmaps are of different sizes (destination size is 1048576, source size is "
            "8388608) and can't be merged");
}

TEST_F(DirtyBitmapTest, SuccessorRecordsWhileParentIsFrozen) {
  open();
  DirtyBitmap* a = add("a", {.granularity = 512, .persistent = false});
  write(0, 512);
  BitmapSet& set = node_->bitmaps();
  auto succ = set.create_successor(*a);
  ASSERT_TRUE(succ);
  EXPECT_TRUE(a->busy());
  EXPECT_FALSE(a->enabled());
  EXPECT_TRUE(a->recording());
  EXPECT_EQ(set.create_successor(*a).error().message,
            "Bitmap 'a' is currently in use by another operation and cannot be used");
  write(4096, 512);
  EXPECT_FALSE(a->bits().get(4096));
  EXPECT_TRUE((*succ)->bits().get(4096));
  auto info = set.query_info();
  ASSERT_EQ(info.size(), 2u);
  EXPECT_FALSE(info[0].contains("name"));  // the anonymous successor, newest first
  EXPECT_EQ(info[1]["name"], "a");
  EXPECT_EQ(info[1]["busy"], true);
  EXPECT_EQ(info[1]["recording"], true);
  auto back = set.reclaim(*a);
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, a);
  EXPECT_EQ(a->count(), 1024u);
  EXPECT_TRUE(a->enabled());
  EXPECT_FALSE(a->busy());
  EXPECT_EQ(set.all().size(), 1u);
}

// QEMU's backup bitmap-mode matrix (iotest 257): what the named bitmap
// holds after the job, given bits A before it, B written during it.
TEST_F(DirtyBitmapTest, SyncModesMatchQemu) {
  open();
  struct Case {
    BitmapSyncMode mode;
    bool success;
    bool keeps_before;  // A still dirty afterwards
  };
  for (Case c :
       {Case{BitmapSyncMode::kOnSuccess, true, false},
        Case{BitmapSyncMode::kOnSuccess, false, true}, Case{BitmapSyncMode::kNever, true, true},
        Case{BitmapSyncMode::kNever, false, true}, Case{BitmapSyncMode::kAlways, true, false},
        Case{BitmapSyncMode::kAlways, false, false}}) {
    DirtyBitmap* b = add("job", {.granularity = 512, .persistent = false});
    write(0, 512);  // A
    ASSERT_TRUE(begin_sync_bitmap(*b, c.mode));
    write(8192, 512);  // B
    HBitmap not_copied(top_.size, 9);
    not_copied.set(65536, 512);  // C: what a failed job did not copy
    DirtyBitmap* named = finish_sync_bitmap(*b, c.mode, c.success, &not_copied);
    ASSERT_EQ(named->name(), "job");
    EXPECT_EQ(named->bits().get(0), c.keeps_before);
    EXPECT_TRUE(named->bits().get(8192));
    EXPECT_EQ(named->bits().get(65536), c.mode == BitmapSyncMode::kAlways && !c.success);
    EXPECT_FALSE(named->busy());
    EXPECT_TRUE(named->enabled());
    EXPECT_EQ(node_->bitmaps().all().size(), 1u);
    ASSERT_TRUE(engine_.run(co_remove_bitmap(graph(), "top", "job")));
  }
  // A read-only bitmap may only be used with `never`.
  DirtyBitmap* ro = add("ro");
  ro->set_read_only(true);
  EXPECT_FALSE(begin_sync_bitmap(*ro, BitmapSyncMode::kOnSuccess));
  EXPECT_TRUE(begin_sync_bitmap(*ro, BitmapSyncMode::kNever));
}

TEST_F(DirtyBitmapTest, PopulateFromAllocationStatus) {
  open();
  base_.allocate(1 << 20, 4096, true);
  top_.allocate(3 << 20, 512, true);
  top_.allocate(5 << 20, 200000, true);
  DirtyBitmap* all = add("all", {.granularity = 65536, .disabled = true});
  DirtyBitmap* above = add("above", {.granularity = 65536, .disabled = true});
  ASSERT_TRUE(engine_.run(co_populate_bitmap(graph(), "top", "all", "")));
  ASSERT_TRUE(engine_.run(co_populate_bitmap(graph(), "top", "above", "base")));
  std::vector<BitmapExtent> top_only = {{3 << 20, 65536}, {5 << 20, 4 * 65536}};
  EXPECT_EQ(extents(*above), top_only);
  std::vector<BitmapExtent> with_base = {{1 << 20, 65536}, {3 << 20, 65536}, {5 << 20, 4 * 65536}};
  EXPECT_EQ(extents(*all), with_base);
  EXPECT_EQ(engine_.run(co_populate_bitmap(graph(), "top", "all", "top")).error().message,
            "Node 'top' is not a backing image of 'top'");
  all->set_busy(true);
  EXPECT_FALSE(engine_.run(co_populate_bitmap(graph(), "top", "all", "")));
}

TEST_F(DirtyBitmapTest, Sha256OfNodeBitmap) {
  open();
  add("h", {.granularity = 65536});
  write(0, 4096);
  auto digest = bitmap_sha256(graph(), "top", "h");
  ASSERT_TRUE(digest);
  HBitmap expect(top_.size, 16);
  expect.set(0, 1);
  EXPECT_EQ(*digest, expect.sha256_hex());
  EXPECT_EQ(bitmap_sha256(graph(), "top", "none").error().message, "Dirty bitmap 'none' not found");
}

}  // namespace
}  // namespace strata
