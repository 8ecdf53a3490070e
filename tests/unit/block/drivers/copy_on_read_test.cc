// The copy-on-read filter: what a read fetches from the backing chain lands
// in the top layer (whole clusters, zeroes as zero clusters), what the top
// allocates is never rewritten, `bottom` limits the copy, the permissions
// are QEMU's, a write racing a copy is not lost, and the engine API inserts
// and drops the filter under a running user.
#include <gtest/gtest.h>

#include "block/core/graph.h"
#include "block/drivers/qcow2/create.h"
#include "block/filters/copy_on_read.h"
#include "strata/drive.h"
#include "unit/block/drivers/temp_dir.h"

namespace strata {
namespace {

using nlohmann::json;

constexpr uint64_t kCluster = 65536;
constexpr uint64_t kSize = 4 * 1024 * 1024;

class CopyOnReadTest : public ::testing::Test {
 protected:
  void create(const std::string& name, const std::string& backing) {
    qcow2::CreateOptions o;
    o.size = kSize;
    if (!backing.empty()) {
      o.backing_file = dir_.file(backing);
      o.backing_format = "qcow2";
    }
    auto r = engine_.run(qcow2::co_create_image(engine_, dir_.file(name), o));
    ASSERT_TRUE(r) << r.error().message;
  }
  json image(const std::string& name) {
    return {{"driver", "qcow2"}, {"file", {{"driver", "file"}, {"filename", dir_.file(name)}}}};
  }
  void write(const std::string& name, uint64_t off, uint64_t len, uint8_t byte) {
    auto d = engine_.run(Drive::co_open(engine_, image(name)));
    ASSERT_TRUE(d) << d.error().message;
    std::vector<uint8_t> buf(len, byte);
    ASSERT_TRUE((*d)->write(off, buf));
    (*d)->close();
  }
  // base (0x11 at 0..128k, 0x22 at 1M..1M+64k), top over it.
  void make_chain() {
    create("base.qcow2", "");
    write("base.qcow2", 0, 2 * kCluster, 0x11);
    write("base.qcow2", 1 << 20, kCluster, 0x22);
    create("top.qcow2", "base.qcow2");
  }
  // Bytes of [off, off+len) that the top layer alone allocates.
  uint64_t allocated_in(Node* node, uint64_t off, uint64_t len) {
    uint64_t sum = 0;
    for (uint64_t pos = off; pos < off + len;) {
      auto st = engine_.run(node->co_block_status(pos, off + len - pos, nullptr));
      EXPECT_TRUE(st);
      if (!st) return sum;
      if (st->flags & kStatusAllocated) sum += st->bytes;
      pos += st->bytes;
    }
    return sum;
  }
  std::vector<uint8_t> read(Drive& d, uint64_t off, uint64_t len) {
    std::vector<uint8_t> buf(len, 0xee);
    EXPECT_TRUE(d.read(off, buf));
    return buf;
  }
  json cor_over_top() { return {{"driver", "copy-on-read"}, {"file", image("top.qcow2")}}; }

  testing::TempDir dir_;
  Engine engine_;
};

TEST_F(CopyOnReadTest, CopiesWholeClustersIntoTheTopLayer) {
  make_chain();
  auto d = engine_.run(Drive::co_open(engine_, cor_over_top()));
  ASSERT_TRUE(d) << d.error().message;
  Node* top = (*d)->edge()->node()->file()->node();
  EXPECT_EQ(allocated_in(top, 0, kSize), 0u);
  // 512 bytes in the middle of the first cluster bring the whole cluster.
  EXPECT_EQ(read(**d, 1000, 512), std::vector<uint8_t>(512, 0x11));
  EXPECT_EQ(allocated_in(top, 0, kSize), kCluster);
  // A read across two clusters (one copied already) and zeroes of the base.
  auto buf = read(**d, kCluster - 100, kCluster + 200);
  EXPECT_EQ(buf[0], 0x11);
  EXPECT_EQ(buf[kCluster + 99], 0x11);
  EXPECT_EQ(buf[kCluster + 150], 0x00);
  EXPECT_EQ(allocated_in(top, 0, kSize), 3 * kCluster);
  (*d)->close();
  // The top alone (no backing) now holds what was read.
  auto alone = image("top.qcow2");
  alone["backing"] = nullptr;
  auto t = engine_.run(Drive::co_open(engine_, alone));
  ASSERT_TRUE(t);
  EXPECT_EQ(read(**t, 0, 2 * kCluster), std::vector<uint8_t>(2 * kCluster, 0x11));
  EXPECT_EQ(read(**t, 2 * kCluster, kCluster), std::vector<uint8_t>(kCluster, 0));
  (*t)->close();
}

TEST_F(CopyOnReadTest, NeverRewritesWhatTheTopAllocates) {
  make_chain();
  write("top.qcow2", 100, 50, 0x99);  // cluster 0 is the top's now
  auto d = engine_.run(Drive::co_open(engine_, cor_over_top()));
  ASSERT_TRUE(d);
  auto buf = read(**d, 0, kCluster);
  EXPECT_EQ(buf[99], 0x11);
  EXPECT_EQ(buf[100], 0x99);
  EXPECT_EQ(buf[150], 0x11);
  Node* top = (*d)->edge()->node()->file()->node();
  EXPECT_EQ(allocated_in(top, 0, kSize), kCluster);
  (*d)->close();
}

TEST_F(CopyOnReadTest, BottomLimitsWhatIsCopied) {
  create("base.qcow2", "");
  write("base.qcow2", 0, kCluster, 0x11);
  create("mid.qcow2", "base.qcow2");
  write("mid.qcow2", kCluster, kCluster, 0x22);
  create("top.qcow2", "mid.qcow2");
  auto top = engine_.run(engine_.graph().co_add(
      {{"driver", "qcow2"},
       {"node-name", "top"},
       {"file", {{"driver", "file"}, {"filename", dir_.file("top.qcow2")}}}}));
  ASSERT_TRUE(top) << top.error().message;
  Node* mid = (*top)->backing()->node();
  auto d = engine_.run(Drive::co_open(
      engine_, {{"driver", "copy-on-read"}, {"file", "top"}, {"bottom", mid->name()}}));
  ASSERT_TRUE(d) << d.error().message;
  auto buf = read(**d, 0, 2 * kCluster);
  EXPECT_EQ(buf[0], 0x11);
  EXPECT_EQ(buf[kCluster], 0x22);
  // The mid cluster was copied, the base one (below bottom) was not.
  EXPECT_EQ(allocated_in(*top, 0, kCluster), 0u);
  EXPECT_EQ(allocated_in(*top, kCluster, kCluster), kCluster);
  (*d)->close();
}

TEST_F(CopyOnReadTest, OptionsAndPermissionsAsQemu) {
  make_chain();
  auto top = engine_.run(engine_.graph().co_add(
      {{"driver", "qcow2"},
       {"node-name", "top"},
       {"file", {{"driver", "file"}, {"filename", dir_.file("top.qcow2")}}}}));
  ASSERT_TRUE(top);
  auto add = [&](json o) -> std::string {
    o["driver"] = "copy-on-read";
    o["node-name"] = "cor";
    auto r = engine_.run(engine_.graph().co_add(o));
    if (r) {
      EXPECT_TRUE(engine_.run(engine_.graph().co_del("cor")));
    }
    return r ? "ok" : r.error().message;
  };
  EXPECT_EQ(add({{"file", "top"}}), "ok");
  EXPECT_EQ(add({{"file", "top"}, {"bottom", "top"}}), "ok");
  EXPECT_EQ(add({}), "Parameter 'file' is missing");
  EXPECT_EQ(add({{"file", "top"}, {"x", 1}}), "Parameter 'x' is unexpected");
  EXPECT_EQ(add({{"file", "top"}, {"bottom", "nosuch"}}), "Bottom node 'nosuch' not found");
  auto other = engine_.run(
      engine_.graph().co_add({{"driver", "null-co"}, {"node-name", "other"}, {"read-only", true}}));
  ASSERT_TRUE(other);
  EXPECT_EQ(add({{"file", "top"}, {"bottom", "other"}}),
            "Bottom node 'other' is not in the backing chain of 'top'");
  EXPECT_EQ(add({{"file", "other"}}), "Block node is read-only");
  auto filter = engine_.run(
      engine_.graph().co_add({{"driver", "copy-on-read"}, {"node-name", "c1"}, {"file", "top"}}));
  ASSERT_TRUE(filter);
  // The filter takes write-unchanged on its child even without parents.
  EXPECT_TRUE((*top)->parents()[0]->perm() & kPermWriteUnchanged);
  EXPECT_EQ(add({{"file", "c1"}, {"bottom", "c1"}}), "Bottom node 'c1' is a filter");
  engine_.run(engine_.graph().co_close_all());
}

struct Outcome {
  Result<void> result;
  bool done = false;
};

Task<void> co_read_into(Drive* d, uint64_t off, std::vector<uint8_t>* buf, Outcome* out) {
  out->result = co_await d->co_read(off, *buf);
  out->done = true;
}

Task<void> co_write_from(Drive* d, uint64_t off, const std::vector<uint8_t>* buf, Outcome* out) {
  out->result = co_await d->co_write(off, *buf);
  out->done = true;
}

Task<void> co_wait_both(Loop* loop, const Outcome* a, const Outcome* b) {
  while (!a->done || !b->done) co_await loop->co_sleep(5);
}

TEST_F(CopyOnReadTest, AWriteRacingACopyIsNotLost) {
  make_chain();
  // The base's reads are slow, so the copy of cluster 0 is in flight when a
  // write of the whole cluster (which needs no copy-on-write) arrives. The
  // copy must not write the old data back over it.
  json slow_base = {{"driver", "qcow2"},
                    {"file",
                     {{"driver", "fault"},
                      {"rules", {{{"event", "read"}, {"errno", 0}, {"delay-ms", 50}}}},
                      {"file", {{"driver", "file"}, {"filename", dir_.file("base.qcow2")}}}}}};
  json opts = cor_over_top();
  opts["file"]["backing"] = slow_base;
  auto d = engine_.run(Drive::co_open(engine_, opts));
  ASSERT_TRUE(d) << d.error().message;
  Drive* drive = d->get();
  std::vector<uint8_t> got(4096), fresh(kCluster, 0x77);
  Outcome r, w;
  engine_.loop().spawn(co_read_into(drive, 0, &got, &r));
  engine_.loop().spawn(co_write_from(drive, 0, &fresh, &w));
  engine_.run(co_wait_both(&engine_.loop(), &r, &w));
  ASSERT_TRUE(r.result) << r.result.error().message;
  ASSERT_TRUE(w.result) << w.result.error().message;
  EXPECT_EQ(got, std::vector<uint8_t>(4096, 0x11));
  EXPECT_EQ(read(*drive, 0, kCluster), fresh);
  drive->close();
}

TEST_F(CopyOnReadTest, InsertAndDropUnderARunningUser) {
  make_chain();
  auto d = engine_.run(Drive::co_open(engine_, image("top.qcow2")));
  ASSERT_TRUE(d);
  Node* top = (*d)->edge()->node();
  CopyOnReadOptions options;  // named: GCC 12 destroys a temporary argument twice
  auto filter = engine_.run(co_insert_copy_on_read(engine_.graph(), *top, options));
  ASSERT_TRUE(filter) << filter.error().message;
  EXPECT_EQ((*d)->edge()->node(), *filter);
  EXPECT_EQ((*filter)->driver_name(), "copy-on-read");
  read(**d, 0, 512);
  EXPECT_EQ(allocated_in(top, 0, kSize), kCluster);
  std::string name = (*filter)->name();
  auto dropped = engine_.run(co_drop_copy_on_read(engine_.graph(), **filter));
  ASSERT_TRUE(dropped) << dropped.error().message;
  EXPECT_EQ((*d)->edge()->node(), top);
  EXPECT_EQ(engine_.graph().find(name), nullptr);
  read(**d, 1 << 20, 512);  // a plain read now: nothing copied
  EXPECT_EQ(allocated_in(top, 0, kSize), kCluster);
  auto not_cor = engine_.run(co_drop_copy_on_read(engine_.graph(), *top));
  EXPECT_FALSE(not_cor);
  (*d)->close();
}

}  // namespace
}  // namespace strata
