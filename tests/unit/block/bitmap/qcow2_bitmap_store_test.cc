// Persistent bitmaps stored back into qcow2 at close, removed from the image
// at once, and the can-store checks: results checked with qemu-img.
#include "block/drivers/qcow2/bitmap_store.h"

#include <gtest/gtest.h>

#include <sys/wait.h>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "block/bitmap/bitmap_ops.h"
#include "block/core/graph.h"
#include "strata/engine.h"
#include "unit/block/drivers/temp_dir.h"

namespace strata::qcow2 {
namespace {

bool have_qemu() {
  return std::system("qemu-img --version >/dev/null 2>&1") == 0;
}

void sh(const std::string& cmd) {
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

Node* open_qcow2(Engine& engine, const std::string& path, bool read_only) {
  auto n = engine.run(engine.graph().co_add({{"driver", "qcow2"},
                                             {"node-name", "q"},
                                             {"read-only", read_only},
                                             {"file", {{"driver", "file"}, {"filename", path}}}}));
  EXPECT_TRUE(n) << n.error().message;
  return n ? *n : nullptr;
}

// qemu-img info's format-specific bitmaps list (-U: the image may be open).
nlohmann::json qemu_bitmaps(const testing::TempDir& dir, const std::string& img) {
  std::string out = dir.file("info.json");
  EXPECT_EQ(std::system(("qemu-img info -U --output=json " + img + " > " + out).c_str()), 0);
  std::ifstream in(out);
  std::stringstream ss;
  ss << in.rdbuf();
  auto j = nlohmann::json::parse(ss.str());
  return j["format-specific"]["data"].value("bitmaps", nlohmann::json::array());
}

void write(Engine& engine, Node& node, uint64_t offset, uint64_t bytes) {
  std::vector<uint8_t> data(bytes, 0x5a);
  ASSERT_TRUE(engine.run(node.co_pwritev(offset, IoVec(data.data(), data.size()), 0)));
}

BitmapAddOptions persistent(bool disabled = false, uint64_t granularity = 65536) {
  BitmapAddOptions o;
  o.persistent = true;
  o.disabled = disabled;
  o.granularity = granularity;
  return o;
}

TEST(Qcow2BitmapStore, NewBitmapsAreStoredAtCloseWithQemusFlags) {
  if (!have_qemu()) GTEST_SKIP() << "qemu-img not installed";
  testing::TempDir dir;
  std::string img = dir.file("a.qcow2");
  sh("qemu-img create -q -f qcow2 " + img + " 64M");
  std::string sha;
  {
    Engine engine;
    Node* node = open_qcow2(engine, img, false);
    ASSERT_TRUE(node);
    ASSERT_TRUE(engine.run(co_add_bitmap(engine.graph(), "q", "on", persistent())));
    ASSERT_TRUE(engine.run(co_add_bitmap(engine.graph(), "q", "off", persistent(true, 512))));
    ASSERT_TRUE(engine.run(co_add_bitmap(engine.graph(), "q", "mem", {})));
    write(engine, *node, 0, 4096);
    write(engine, *node, 40 << 20, 200000);
    sha = *bitmap_sha256(engine.graph(), "q", "on");
    engine.run(engine.co_close_all());
  }
  auto bitmaps = qemu_bitmaps(dir, img);
  ASSERT_EQ(bitmaps.size(), 2u) << bitmaps.dump();
  // Newest first, as QEMU appends them.
  EXPECT_EQ(bitmaps[1]["name"], "on");
  EXPECT_EQ(bitmaps[1]["flags"], nlohmann::json::array({"auto"}));
  EXPECT_EQ(bitmaps[1]["granularity"], 65536);
  EXPECT_EQ(bitmaps[0]["name"], "off");
  EXPECT_EQ(bitmaps[0]["flags"], nlohmann::json::array());
  EXPECT_EQ(bitmaps[0]["granularity"], 512);
  sh("qemu-img check -q " + img);
  Engine engine;
  ASSERT_TRUE(open_qcow2(engine, img, true));
  auto on = lookup_bitmap(engine.graph(), "q", "on");
  ASSERT_TRUE(on);
  EXPECT_EQ((*on)->count(), 65536u + 4 * 65536);  // 200000 bytes at 40M span 4 granules
  EXPECT_EQ(*bitmap_sha256(engine.graph(), "q", "on"), sha);
  auto off = lookup_bitmap(engine.graph(), "q", "off");
  ASSERT_TRUE(off);
  EXPECT_FALSE((*off)->recording());
  EXPECT_EQ((*off)->count(), 0u);
  EXPECT_FALSE(lookup_bitmap(engine.graph(), "q", "mem"));
  engine.run(engine.co_close_all());
}

// A bitmap QEMU wrote, reopened read-write, updated and closed: in-use
// while open, `auto` only afterwards, old clusters freed (check is clean).
TEST(Qcow2BitmapStore, LoadedBitmapsGoBackWithoutInUse) {
  if (!have_qemu()) GTEST_SKIP() << "qemu-img not installed";
  testing::TempDir dir;
  std::string img = dir.file("b.qcow2");
  sh("qemu-img create -q -f qcow2 " + img + " 8M && qemu-img bitmap --add " + img +
     " b && qemu-io -f qcow2 -c 'write 64k 4k' " + img + " >/dev/null");
  for (int round = 0; round < 3; round++) {
    Engine engine;
    Node* node = open_qcow2(engine, img, false);
    ASSERT_TRUE(node);
    EXPECT_EQ(qemu_bitmaps(dir, img)[0]["flags"], nlohmann::json::array({"in-use", "auto"}));
    write(engine, *node, (1 + round) << 20, 512);
    engine.run(engine.co_close_all());
    auto bitmaps = qemu_bitmaps(dir, img);
    ASSERT_EQ(bitmaps.size(), 1u);
    EXPECT_EQ(bitmaps[0]["flags"], nlohmann::json::array({"auto"}));
    sh("qemu-img check -q " + img);
  }
  // QEMU accepts the stored bitmap (in-use ones make convert --bitmaps fail);
  // Strata reads the same dirty set: 64k, 1M, 2M, 3M.
  sh("qemu-img convert -f qcow2 -O qcow2 --bitmaps " + img + " " + dir.file("c.qcow2"));
  Engine engine;
  ASSERT_TRUE(open_qcow2(engine, img, true));
  auto b = lookup_bitmap(engine.graph(), "q", "b");
  ASSERT_TRUE(b);
  EXPECT_EQ((*b)->count(), 4u * 65536);
  for (uint64_t off : {65536ull, 1ull << 20, 2ull << 20, 3ull << 20}) {
    EXPECT_TRUE((*b)->bits().get(off)) << off;
  }
  engine.run(engine.co_close_all());
}

TEST(Qcow2BitmapStore, RemoveDeletesFromTheImageAtOnce) {
  if (!have_qemu()) GTEST_SKIP() << "qemu-img not installed";
  testing::TempDir dir;
  std::string img = dir.file("d.qcow2");
  sh("qemu-img create -q -f qcow2 " + img + " 8M && qemu-img bitmap --add " + img +
     " a && qemu-img bitmap --add " + img + " b && qemu-io -f qcow2 -c 'write 0 1M' " + img +
     " >/dev/null");
  Engine engine;
  ASSERT_TRUE(open_qcow2(engine, img, false));
  ASSERT_TRUE(engine.run(co_remove_bitmap(engine.graph(), "q", "a")));
  auto bitmaps = qemu_bitmaps(dir, img);
  ASSERT_EQ(bitmaps.size(), 1u);
  EXPECT_EQ(bitmaps[0]["name"], "b");
  ASSERT_TRUE(engine.run(co_remove_bitmap(engine.graph(), "q", "b")));
  EXPECT_TRUE(qemu_bitmaps(dir, img).empty());
  engine.run(engine.co_close_all());
  sh("qemu-img check -q " + img);
  EXPECT_TRUE(qemu_bitmaps(dir, img).empty());
}

TEST(Qcow2BitmapStore, CanStoreChecksWithQemusMessages) {
  if (!have_qemu()) GTEST_SKIP() << "qemu-img not installed";
  testing::TempDir dir;
  std::string v2 = dir.file("v2.qcow2"), v3 = dir.file("v3.qcow2");
  sh("qemu-img create -q -f qcow2 -o compat=0.10 " + v2 + " 1M && qemu-img create -q -f qcow2 " +
     v3 + " 1M");
  Engine engine;
  auto add = [&](const std::string& node, const std::string& name, BitmapAddOptions o) {
    auto r = engine.run(co_add_bitmap(engine.graph(), node, name, o));
    return r ? std::string() : r.error().message;
  };
  auto v2node =
      engine.run(engine.graph().co_add({{"driver", "qcow2"},
                                        {"node-name", "old"},
                                        {"file", {{"driver", "file"}, {"filename", v2}}}}));
  ASSERT_TRUE(v2node);
  EXPECT_EQ(add("old", "x", persistent()),
            "Can't make bitmap 'x' persistent in 'old': Cannot store dirty bitmaps in qcow2 v2 "
            "files");
  ASSERT_TRUE(open_qcow2(engine, v3, false));
  EXPECT_EQ(add("q", std::string(1024, 'n'), persistent()),
            "Can't make bitmap '" + std::string(1024, 'n') +
                "' persistent in 'q': Name length exceeds maximum (1023 characters)");
  EXPECT_EQ(add("q", "big", persistent(false, uint64_t{1} << 32)),
            "Can't make bitmap 'big' persistent in 'q': Granularity exceeds maximum "
            "(2147483648 bytes)");
  EXPECT_EQ(add("q", "ok", persistent()), "");
  EXPECT_EQ(add("q", "ok", persistent()), "Bitmap already exists: ok");
  engine.run(engine.co_close_all());
  EXPECT_EQ(qemu_bitmaps(dir, v3).size(), 1u);
}

// A bitmap found in-use stays in-use (only removal fixes it); a corrupt
// table makes only that bitmap inconsistent, and guest data is untouched.
TEST(Qcow2BitmapStore, InconsistentBitmapsKeepTheirEntry) {
  if (!have_qemu()) GTEST_SKIP() << "qemu-img not installed";
  testing::TempDir dir;
  std::string img = dir.file("e.qcow2");
  sh("qemu-img create -q -f qcow2 " + img + " 1M && qemu-img bitmap --add " + img +
     " bad && qemu-img bitmap --add " + img + " good && qemu-io -f qcow2 -c 'write 0 4k' " + img +
     " >/dev/null");
  {
    // Corrupt "bad"'s table pointer: reserved bits set in its first entry.
    Engine engine;
    Node* node = open_qcow2(engine, img, true);
    ASSERT_TRUE(node);
    auto* store = dynamic_cast<Qcow2BitmapStore*>(bitmap_store_of(*node));
    ASSERT_TRUE(store);
    uint64_t table = store->on_disk()[0].table_offset;
    engine.run(engine.co_close_all());
    std::FILE* f = std::fopen(img.c_str(), "r+b");
    ASSERT_TRUE(f);
    std::fseek(f, long(table), SEEK_SET);
    uint8_t junk[8] = {0xff, 0, 0, 0, 0, 0, 0, 0x02};
    std::fwrite(junk, 1, 8, f);
    std::fclose(f);
  }
  {
    Engine engine;
    Node* node = open_qcow2(engine, img, false);
    ASSERT_TRUE(node);
    auto info = query_bitmaps(*node);
    ASSERT_EQ(info.size(), 2u);
    auto bad = lookup_bitmap(engine.graph(), "q", "bad");
    ASSERT_TRUE(bad);
    EXPECT_TRUE((*bad)->inconsistent());
    auto good = lookup_bitmap(engine.graph(), "q", "good");
    ASSERT_TRUE(good);
    EXPECT_EQ((*good)->count(), 65536u);
    write(engine, *node, 512 << 10, 4096);
    engine.run(engine.co_close_all());
  }
  auto bitmaps = qemu_bitmaps(dir, img);
  ASSERT_EQ(bitmaps.size(), 2u);
  EXPECT_EQ(bitmaps[0]["flags"], nlohmann::json::array({"in-use", "auto"}));
  EXPECT_EQ(bitmaps[1]["flags"], nlohmann::json::array({"auto"}));
  sh("qemu-io -f qcow2 -c 'read -P 0x5a 512k 4k' " + img + " | grep -q 'read 4096'");
  // Removing the inconsistent bitmap is allowed and cleans the image.
  Engine engine;
  ASSERT_TRUE(open_qcow2(engine, img, false));
  ASSERT_TRUE(engine.run(co_remove_bitmap(engine.graph(), "q", "bad")));
  engine.run(engine.co_close_all());
  bitmaps = qemu_bitmaps(dir, img);
  ASSERT_EQ(bitmaps.size(), 1u);
  EXPECT_EQ(bitmaps[0]["name"], "good");
}

// A crash at any write of a read-write session (open marks in-use, a guest
// write, the store at close): writes after the N-th never reach the file.
// Whatever N, QEMU finds no corruption (leaks only) and the bitmap is
// consistent with the old or the new contents, or in-use (inconsistent), or
// gone: a crash between clearing and setting autoclear bit 0 around the
// in-place in-use update makes every bitmap look written by a program
// without bitmap support, as in QEMU. It is never wrongly consistent.
TEST(Qcow2BitmapStore, CrashAtAnyWriteLeavesOldOrNewState) {
  if (!have_qemu()) GTEST_SKIP() << "qemu-img not installed";
  testing::TempDir dir;
  std::string base = dir.file("base.qcow2"), img = dir.file("img.qcow2");
  sh("qemu-img create -q -f qcow2 " + base + " 8M && qemu-img bitmap --add " + base +
     " b && qemu-io -f qcow2 -c 'write 64k 4k' " + base + " >/dev/null");
  int completed = 0;
  for (uint64_t n = 0; n < 64 && completed < 3; n++) {
    sh("cp " + base + " " + img);
    {
      Engine engine;
      nlohmann::json file = {{"driver", "fault"},
                             {"rules", {{{"event", "write"}, {"skip", n}}}},
                             {"file", {{"driver", "file"}, {"filename", img}}}};
      auto node = engine.run(
          engine.graph().co_add({{"driver", "qcow2"}, {"node-name", "q"}, {"file", file}}));
      if (node) {
        std::vector<uint8_t> data(4096, 1);
        (void)engine.run((*node)->co_pwritev(2 << 20, IoVec(data.data(), data.size()), 0));
      }
      engine.run(engine.co_close_all());
    }
    int rc = std::system(("qemu-img check -q " + img + " >/dev/null 2>&1").c_str());
    ASSERT_TRUE(rc == 0 || WEXITSTATUS(rc) == 3) << "corruption after " << n << " writes";
    Engine engine;
    ASSERT_TRUE(open_qcow2(engine, img, true)) << n;
    auto b = lookup_bitmap(engine.graph(), "q", "b");
    if (b && !(*b)->inconsistent()) {
      EXPECT_TRUE((*b)->bits().get(65536)) << n;
      uint64_t count = (*b)->count();
      EXPECT_TRUE(count == 65536u || count == 2u * 65536) << n << ": " << count;
      if (count == 2u * 65536) {
        EXPECT_TRUE((*b)->bits().get(2 << 20)) << n;
        completed++;
      }
    }
    engine.run(engine.co_close_all());
  }
  EXPECT_EQ(completed, 3) << "the session never completed without a fault";
}

}  // namespace
}  // namespace strata::qcow2
