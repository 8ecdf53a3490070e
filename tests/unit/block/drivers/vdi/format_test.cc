#include "block/drivers/vdi/format.h"

#include <gtest/gtest.h>

#include <vector>

namespace strata::vdi {
namespace {

void put(std::vector<uint8_t>& b, size_t at, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; i++) b[at + i] = uint8_t(v >> (8 * i));
}

// What qemu-img writes for a dynamic 3 MiB image.
std::vector<uint8_t> header() {
  std::vector<uint8_t> h(512, 0);
  put(h, 0x40, kSignature, 4);
  put(h, 0x44, kVersion, 4);
  put(h, 0x4c, kTypeDynamic, 4);
  put(h, 0x154, 0x200, 4);
  put(h, 0x158, 0x400, 4);
  put(h, 0x168, 512, 4);
  put(h, 0x170, 3 << 20, 8);
  put(h, 0x178, kBlockSize, 4);
  put(h, 0x180, 3, 4);
  return h;
}

std::string refusal(size_t at, uint64_t v, int bytes) {
  auto h = header();
  put(h, at, v, bytes);
  auto r = parse_header(h);
  return r ? "" : r.error().message;
}

TEST(VdiFormatTest, Header) {
  auto h = parse_header(header());
  ASSERT_TRUE(h) << h.error().message;
  EXPECT_EQ(h->disk_size, 3u << 20);
  EXPECT_EQ(h->offset_data, 0x400u);
  EXPECT_EQ(h->blocks_in_image, 3u);
}

TEST(VdiFormatTest, OddSizesRoundUp) {
  auto b = header();
  put(b, 0x170, (3 << 20) - 1000, 8);
  EXPECT_EQ(parse_header(b)->disk_size, (3u << 20) - 512);
}

TEST(VdiFormatTest, QemusRefusals) {
  EXPECT_EQ(refusal(0x40, 0x12345678, 4), "Image not in VDI format (bad signature 12345678)");
  EXPECT_EQ(refusal(0x44, 0x00010002, 4), "unsupported VDI image (version 1.2)");
  EXPECT_EQ(refusal(0x154, 0x201, 4), "unsupported VDI image (unaligned block map offset 0x201)");
  EXPECT_EQ(refusal(0x158, 0x401, 4), "unsupported VDI image (unaligned data offset 0x401)");
  EXPECT_EQ(refusal(0x168, 4096, 4), "unsupported VDI image (sector size 4096 is not 512)");
  EXPECT_EQ(refusal(0x178, 4096, 4), "unsupported VDI image (block size 4096 is not 1048576)");
  EXPECT_EQ(refusal(0x170, 4 << 20, 8),
            "unsupported VDI image (disk size 4194304, image bitmap has room for 3145728)");
  EXPECT_EQ(refusal(0x1a8, 1, 1), "unsupported VDI image (non-NULL link UUID)");
  EXPECT_EQ(refusal(0x1b8, 1, 1), "unsupported VDI image (non-NULL parent UUID)");
  EXPECT_EQ(refusal(0x180, 0x20000000, 4),
            "unsupported VDI image (too many blocks 536870912, max is 536870784)");
  EXPECT_EQ(refusal(0x170, uint64_t(1) << 62, 8),
            "Unsupported VDI image size (size is 0x4000000000000000, max supported is "
            "0x1fffff8000000)");
}

}  // namespace
}  // namespace strata::vdi
