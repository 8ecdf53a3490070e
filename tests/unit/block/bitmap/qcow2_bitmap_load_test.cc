// Persistent bitmaps of a qcow2 image QEMU wrote, loaded when a qcow2 node
// opens: flags, contents and digests as QEMU reports them; in-use marking
// on writable opens.
#include "block/drivers/qcow2/bitmap_load.h"

#include <gtest/gtest.h>

#include <cstdlib>

#include "block/bitmap/bitmap_ops.h"
#include "block/core/graph.h"
#include "strata/engine.h"
#include "unit/block/drivers/temp_dir.h"

namespace strata::qcow2 {
namespace {

bool have_qemu() {
  return std::system("qemu-img --version >/dev/null 2>&1") == 0;
}

Node* open_qcow2(Engine& engine, const std::string& path, bool read_only) {
  auto n = engine.run(engine.graph().co_add({{"driver", "qcow2"},
                                             {"node-name", "q"},
                                             {"read-only", read_only},
                                             {"file", {{"driver", "file"}, {"filename", path}}}}));
  EXPECT_TRUE(n) << n.error().message;
  return n ? *n : nullptr;
}

TEST(Qcow2BitmapLoad, ReadOnlyNodeGetsQemusBitmaps) {
  if (!have_qemu()) GTEST_SKIP() << "qemu-img not installed";
  testing::TempDir dir;
  std::string img = dir.file("a.qcow2");
  std::string cmd = "qemu-img create -q -f qcow2 " + img + " 10487296 && qemu-img bitmap --add " +
                    img + " b64k && qemu-img bitmap --add -g 512 " + img +
                    " b512 && qemu-img bitmap --add --disable " + img +
                    " off && qemu-io -f qcow2 -c 'write 0 4k' -c 'write 1M 64k' -c 'write 10M 1k' "
                    "-c 'write 5000000 777' " +
                    img + " >/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  Engine engine;
  Node* node = open_qcow2(engine, img, true);
  ASSERT_TRUE(node);
  auto info = query_bitmaps(*node);
  ASSERT_EQ(info.size(), 3u);
  auto b64k = lookup_bitmap(engine.graph(), "q", "b64k");
  ASSERT_TRUE(b64k);
  EXPECT_EQ((*b64k)->count(), 262144u);
  EXPECT_TRUE((*b64k)->persistent());
  EXPECT_TRUE((*b64k)->recording());
  EXPECT_EQ(*bitmap_sha256(engine.graph(), "q", "b64k"),
            "39c678ffcbece821ad359685c14a99ae6fbcb7575e57f434500a6287e8be7c1e");
  EXPECT_EQ(*bitmap_sha256(engine.graph(), "q", "b512"),
            "de369442e3ece6e4b15b1d33d6da70d3300fae029714de78719cf042f08e4b4b");
  auto off = lookup_bitmap(engine.graph(), "q", "off");
  ASSERT_TRUE(off);
  EXPECT_FALSE((*off)->recording());
  EXPECT_EQ((*off)->count(), 0u);
  // Persistent bitmaps of a read-only image are read-only.
  EXPECT_EQ(clear_bitmap(engine.graph(), "q", "b512").error().message,
            "Bitmap 'b512' is readonly and cannot be modified");
  engine.run(engine.co_close_all());
}

TEST(Qcow2BitmapLoad, InUseLoadsInconsistent) {
  if (!have_qemu()) GTEST_SKIP() << "qemu-img not installed";
  testing::TempDir dir;
  std::string img = dir.file("b.qcow2");
  std::string cmd = "qemu-img create -q -f qcow2 " + img + " 1M && qemu-img bitmap --add " + img +
                    " b && qemu-io -f qcow2 -c 'write 0 4k' -c 'abort' " + img + " >/dev/null 2>&1";
  std::system(cmd.c_str());  // abort() leaves the bitmap in use on disk
  Engine engine;
  Node* node = open_qcow2(engine, img, true);
  ASSERT_TRUE(node);
  auto info = query_bitmaps(*node);
  ASSERT_EQ(info.size(), 1u);
  EXPECT_EQ(info[0]["inconsistent"], true);
  EXPECT_EQ(info[0]["recording"], false);
  EXPECT_EQ(info[0]["count"], 0);
  EXPECT_EQ(enable_bitmap(engine.graph(), "q", "b", true).error().message,
            "Bitmap 'b' is inconsistent and cannot be used");
  engine.run(engine.co_close_all());
}

// A writable open marks the bitmaps in-use on disk (QEMU's order), so QEMU
// never trusts a bitmap Strata's writes may have outdated; a clean close
// stores them back (bitmap_store.h) without the flag.
TEST(Qcow2BitmapLoad, WritableOpenMarksInUseOnDisk) {
  if (!have_qemu()) GTEST_SKIP() << "qemu-img not installed";
  testing::TempDir dir;
  std::string img = dir.file("c.qcow2");
  std::string cmd = "qemu-img create -q -f qcow2 " + img + " 1M && qemu-img bitmap --add " + img +
                    " b && qemu-io -f qcow2 -c 'write 64k 4k' " + img + " >/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  std::string info = dir.file("info.txt");
  std::string qemu_info = "qemu-img info -U --output=json " + img + " > " + info;
  {
    Engine engine;
    Node* node = open_qcow2(engine, img, false);
    ASSERT_TRUE(node);
    auto b = lookup_bitmap(engine.graph(), "q", "b");
    ASSERT_TRUE(b);
    EXPECT_FALSE((*b)->read_only());
    EXPECT_TRUE((*b)->recording());
    EXPECT_EQ((*b)->count(), 65536u);
    std::vector<uint8_t> data(4096, 7);
    ASSERT_TRUE(engine.run(node->co_pwritev(0, IoVec(data.data(), data.size()), 0)));
    EXPECT_EQ((*b)->count(), 2u * 65536);
    ASSERT_EQ(std::system(qemu_info.c_str()), 0);
    EXPECT_EQ(std::system(("grep -q in-use " + info).c_str()), 0) << "bitmap not in-use on disk";
    engine.run(engine.co_close_all());
  }
  ASSERT_EQ(std::system(qemu_info.c_str()), 0);
  EXPECT_NE(std::system(("grep -q in-use " + info).c_str()), 0) << "in-use after a clean close";
  EXPECT_EQ(std::system(("qemu-img check -q " + img).c_str()), 0);
  Engine engine;
  Node* node = open_qcow2(engine, img, true);
  ASSERT_TRUE(node);
  EXPECT_FALSE(query_bitmaps(*node)[0].contains("inconsistent"));
  EXPECT_EQ(query_bitmaps(*node)[0]["count"], 2 * 65536);
  engine.run(engine.co_close_all());
}

}  // namespace
}  // namespace strata::qcow2
