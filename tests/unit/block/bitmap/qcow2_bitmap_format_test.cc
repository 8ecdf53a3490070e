// The qcow2 bitmaps extension decoder against images QEMU wrote: qemu-img
// adds the bitmaps, qemu-io writes through them, and the bitmaps decoded
// from the file must hold exactly the written granules (and QEMU's digest).
// Corrupt directories and tables give errors, never crashes.
#include "block/drivers/qcow2/bitmap_format.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <random>

#include "strata/engine.h"
#include "unit/block/drivers/temp_dir.h"

namespace strata::qcow2 {
namespace {

uint32_t be32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}
uint64_t be64(const uint8_t* p) {
  return uint64_t(be32(p)) << 32 | be32(p + 4);
}

bool have_qemu() {
  return std::system("qemu-img --version >/dev/null 2>&1") == 0;
}

struct Image {
  int fd = -1;
  uint64_t cluster_size = 0;
  uint64_t size = 0;
  uint64_t autoclear = 0;
  std::vector<uint8_t> ext;  // bitmaps extension payload
  ~Image() {
    if (fd >= 0) close(fd);
  }
};

// Reads the header and finds the bitmaps extension.
void open_image(const std::string& path, Image& img) {
  img.fd = ::open(path.c_str(), O_RDONLY);
  ASSERT_GE(img.fd, 0);
  std::vector<uint8_t> h(4096);
  ASSERT_EQ(pread(img.fd, h.data(), h.size(), 0), 4096);
  img.cluster_size = uint64_t{1} << be32(&h[20]);
  img.size = be64(&h[24]);
  img.autoclear = be64(&h[88]);
  uint32_t header_length = be32(&h[100]);
  for (size_t pos = header_length; pos + 8 <= h.size();) {
    uint32_t magic = be32(&h[pos]), len = be32(&h[pos + 4]);
    if (magic == 0) break;
    if (magic == kExtBitmaps) img.ext.assign(&h[pos + 8], &h[pos + 8 + len]);
    pos += 8 + ((len + 7) & ~7u);
  }
}

ClusterReader file_reader(int fd) {
  return [fd](uint64_t offset, std::span<uint8_t> buf) -> Task<Result<void>> {
    if (pread(fd, buf.data(), buf.size(), offset) != static_cast<ssize_t>(buf.size())) {
      co_return Error{EIO, "short read"};
    }
    co_return Result<void>{};
  };
}

TEST(Qcow2BitmapFormat, DecodesBitmapsQemuWrote) {
  if (!have_qemu()) GTEST_SKIP() << "qemu-img not installed";
  testing::TempDir dir;
  std::string img_path = dir.file("a.qcow2");
  std::string cmd =
      "qemu-img create -q -f qcow2 " + img_path + " 10487296 && qemu-img bitmap --add " + img_path +
      " b64k && qemu-img bitmap --add -g 512 " + img_path +
      " b512 && qemu-img bitmap --add --disable " + img_path +
      " off && qemu-io -f qcow2 -c 'write 0 4k' -c 'write 1M 64k' -c 'write 10M 1k' -c "
      "'write 5000000 777' " +
      img_path + " >/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  Image img;
  ASSERT_NO_FATAL_FAILURE(open_image(img_path, img));
  EXPECT_EQ(img.autoclear & kAutoclearBitmaps, kAutoclearBitmaps);
  auto ext = parse_bitmaps_extension(img.ext, img.cluster_size);
  ASSERT_TRUE(ext) << ext.error().message;
  EXPECT_EQ(ext->nb_bitmaps, 3u);
  std::vector<uint8_t> raw(ext->directory_size);
  ASSERT_EQ(pread(img.fd, raw.data(), raw.size(), ext->directory_offset),
            static_cast<ssize_t>(raw.size()));
  auto entries = parse_bitmap_directory(raw, ext->nb_bitmaps, img.cluster_size, img.size);
  ASSERT_TRUE(entries) << entries.error().message;
  ASSERT_EQ(entries->size(), 3u);
  Engine engine;
  for (const BitmapDirEntry& e : *entries) {
    EXPECT_FALSE(e.in_use()) << e.name;  // closed cleanly
    EXPECT_EQ(e.auto_flag(), e.name != "off") << e.name;
    EXPECT_EQ(e.table_size, bitmap_table_entries(img.size, e.granularity_bits, img.cluster_size));
    auto bits = engine.run(co_load_bitmap(e, img.size, img.cluster_size, file_reader(img.fd)));
    ASSERT_TRUE(bits) << bits.error().message;
    HBitmap expect(img.size, e.granularity_bits);
    if (e.name != "off") {
      expect.set(0, 4096);
      expect.set(1 << 20, 65536);
      expect.set(10 << 20, 1024);
      expect.set(5000000, 777);
    }
    EXPECT_TRUE(*bits == expect) << e.name;
    if (e.name == "b64k") {
      EXPECT_EQ(bits->sha256_hex(),
                "39c678ffcbece821ad359685c14a99ae6fbcb7575e57f434500a6287e8be7c1e");
    }
    if (e.name == "b512") {
      EXPECT_EQ(bits->sha256_hex(),
                "de369442e3ece6e4b15b1d33d6da70d3300fae029714de78719cf042f08e4b4b");
    }
  }
  // Our encoder writes the same directory bytes QEMU wrote.
  EXPECT_EQ(encode_bitmap_directory(*entries), raw);
  EXPECT_EQ(encode_bitmaps_extension(*ext), img.ext);
}

TEST(Qcow2BitmapFormat, InUseBitmapIsReportedNotLoaded) {
  if (!have_qemu()) GTEST_SKIP() << "qemu-img not installed";
  // qemu-io killed while it holds the image read-write leaves in_use set.
  testing::TempDir dir;
  std::string img_path = dir.file("b.qcow2");
  std::string cmd = "qemu-img create -q -f qcow2 " + img_path + " 1M && qemu-img bitmap --add " +
                    img_path + " b && qemu-io -f qcow2 -c 'write 0 4k' -c 'abort' " + img_path +
                    " >/dev/null 2>&1";
  std::system(cmd.c_str());  // abort() makes the shell report a failure
  Image img;
  ASSERT_NO_FATAL_FAILURE(open_image(img_path, img));
  auto ext = parse_bitmaps_extension(img.ext, img.cluster_size);
  ASSERT_TRUE(ext) << ext.error().message;
  std::vector<uint8_t> raw(ext->directory_size);
  ASSERT_GT(pread(img.fd, raw.data(), raw.size(), ext->directory_offset), 0);
  auto entries = parse_bitmap_directory(raw, ext->nb_bitmaps, img.cluster_size, img.size);
  ASSERT_TRUE(entries) << entries.error().message;
  EXPECT_TRUE(entries->at(0).in_use());
}

BitmapDirEntry sample_entry(const std::string& name) {
  BitmapDirEntry e;
  e.table_offset = 0x30000;
  e.table_size = 1;
  e.flags = kBitmapFlagAuto;
  e.granularity_bits = 16;
  e.name = name;
  return e;
}

TEST(Qcow2BitmapFormat, CorruptDirectoriesAreErrors) {
  const uint64_t cs = 65536, disk = 1 << 30;
  auto dir = encode_bitmap_directory({sample_entry("a"), sample_entry("bb")});
  ASSERT_TRUE(parse_bitmap_directory(dir, 2, cs, disk));
  EXPECT_EQ(parse_bitmap_directory(dir, 1, cs, disk).error().message,
            "More bitmaps found than specified in header extension");
  EXPECT_EQ(parse_bitmap_directory(dir, 3, cs, disk).error().message,
            "Less bitmaps found than specified in header extension");
  auto truncated = dir;
  truncated.resize(dir.size() - 8);
  EXPECT_EQ(parse_bitmap_directory(truncated, 2, cs, disk).error().message,
            "Broken bitmap directory");
  auto dup = encode_bitmap_directory({sample_entry("a"), sample_entry("a")});
  EXPECT_EQ(parse_bitmap_directory(dup, 2, cs, disk).error().message, "Broken bitmap directory");
  auto bad_flags = sample_entry("f");
  bad_flags.flags = 4;  // extra_data_compatible: refused as QEMU does
  EXPECT_EQ(
      parse_bitmap_directory(encode_bitmap_directory({bad_flags}), 1, cs, disk).error().message,
      "Bitmap 'f' doesn't satisfy the constraints");
  auto small = sample_entry("s");
  small.table_size = 1;  // 64K * 8 bits * 64K granules = 32 GiB: enough for 1 GiB
  EXPECT_TRUE(parse_bitmap_directory(encode_bitmap_directory({small}), 1, cs, disk));
  EXPECT_FALSE(parse_bitmap_directory(encode_bitmap_directory({small}), 1, cs, uint64_t{64} << 30));
  small.flags |= kBitmapFlagInUse;  // an in-use table need not cover the disk
  EXPECT_TRUE(parse_bitmap_directory(encode_bitmap_directory({small}), 1, cs, uint64_t{64} << 30));
  auto gran = sample_entry("g");
  gran.granularity_bits = 8;
  EXPECT_FALSE(parse_bitmap_directory(encode_bitmap_directory({gran}), 1, cs, disk));
  auto extra = dir;
  extra[23] = 8;  // extra_data_size of the first entry
  EXPECT_FALSE(parse_bitmap_directory(extra, 2, cs, disk));
  // Random corruption never crashes.
  std::mt19937_64 rng(3);
  for (int i = 0; i < 2000; i++) {
    auto junk = dir;
    for (int k = 0; k < 3; k++) junk[rng() % junk.size()] = static_cast<uint8_t>(rng());
    (void)parse_bitmap_directory(junk, 2, cs, disk);
  }
  std::vector<uint8_t> ext_bytes = encode_bitmaps_extension({1, 32, 3 * cs});
  EXPECT_TRUE(parse_bitmaps_extension(ext_bytes, cs));
  EXPECT_EQ(parse_bitmaps_extension(encode_bitmaps_extension({0, 32, cs}), cs).error().message,
            "found bitmaps extension with zero bitmaps");
  EXPECT_EQ(parse_bitmaps_extension(encode_bitmaps_extension({1, 32, cs + 8}), cs).error().message,
            "bitmaps_ext: invalid bitmap directory offset");
}

TEST(Qcow2BitmapFormat, TableEntriesAndClusterRoundTrip) {
  const uint64_t cs = 512;
  std::vector<uint64_t> good = {0, kBitmapTableAllOnes, 0x10000, 0x200};
  auto parsed = parse_bitmap_table(encode_bitmap_table(good), 4, cs, "t");
  ASSERT_TRUE(parsed);
  EXPECT_EQ(*parsed, good);
  for (uint64_t bad : {uint64_t{0x10001}, uint64_t{2}, uint64_t{0x100}, uint64_t{1} << 60}) {
    EXPECT_EQ(parse_bitmap_table(encode_bitmap_table({bad}), 1, cs, "t").error().message,
              "Could not read bitmap_table table from image for bitmap 't'");
  }
  // Load through a table with zero, all-ones and data entries.
  HBitmap src(10 * 4096 * 512, 9);  // 40960 bits: ten 512-byte data clusters
  src.set_bits(5000, 3);
  src.set_bits(40000, 900);
  std::vector<std::vector<uint8_t>> clusters;
  std::vector<uint64_t> table;
  for (uint64_t i = 0; i < 10; i++) {
    if (i == 3) {
      table.push_back(kBitmapTableAllOnes);
    } else if (bitmap_cluster_dirty(src, i, cs)) {
      table.push_back(0x100000 + i * cs);
      clusters.push_back(serialize_bitmap_cluster(src, i, cs));
    } else {
      table.push_back(0);
    }
  }
  EXPECT_EQ(clusters.size(), 2u);
  auto table_bytes = encode_bitmap_table(table);
  ClusterReader read = [&](uint64_t offset, std::span<uint8_t> buf) -> Task<Result<void>> {
    if (offset == 0x8000) {
      std::copy(table_bytes.begin(), table_bytes.end(), buf.begin());
    } else {
      uint64_t i = (offset - 0x100000) / cs;
      auto c = serialize_bitmap_cluster(src, i, cs);
      std::copy(c.begin(), c.end(), buf.begin());
    }
    co_return Result<void>{};
  };
  BitmapDirEntry e;
  e.table_offset = 0x8000;
  e.table_size = 10;
  e.granularity_bits = 9;
  e.name = "t";
  Engine engine;
  auto loaded = engine.run(co_load_bitmap(e, src.size(), cs, read));
  ASSERT_TRUE(loaded);
  HBitmap expect = src;
  expect.set_bits(3 * 4096, 4096);
  EXPECT_TRUE(*loaded == expect);
  EXPECT_EQ(loaded->count(), 3u + 900 + 4096);
}

}  // namespace
}  // namespace strata::qcow2
