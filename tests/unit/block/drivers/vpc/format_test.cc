#include "block/drivers/vpc/format.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

namespace strata::vpc {
namespace {

void put_be(std::vector<uint8_t>& b, size_t at, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; i++) b[at + i] = uint8_t(v >> (8 * (bytes - 1 - i)));
}

std::vector<uint8_t> footer(const char* app, uint64_t size, uint16_t c, uint8_t h, uint8_t s) {
  std::vector<uint8_t> f(512, 0);
  std::memcpy(f.data(), "conectix", 8);
  std::memcpy(f.data() + 28, app, 4);
  put_be(f, 48, size, 8);
  put_be(f, 56, c, 2);
  f[58] = h;
  f[59] = s;
  put_be(f, 60, kTypeDynamic, 4);
  uint32_t sum = 0;
  for (uint8_t b : f) sum += b;
  put_be(f, 64, ~sum, 4);
  return f;
}

uint64_t sectors(const char* app, uint64_t size, uint16_t c, uint8_t h, uint8_t s,
                 SizeCalc calc = SizeCalc::kAuto) {
  auto f = parse_footer(footer(app, size, c, h, s));
  EXPECT_TRUE(f);
  return virtual_sectors(*f, calc);
}

TEST(VpcFormatTest, SizeFromGeometryOrFooterByCreator) {
  // 20 * 16 * 63 sectors of geometry, a footer size of 1 MiB.
  for (const char* app : {"vpc ", "qemu", "xyz "}) {
    EXPECT_EQ(sectors(app, 1 << 20, 20, 16, 63), 20u * 16 * 63) << app;
  }
  for (const char* app : {"win ", "qem2", "d2v ", "CTXS"}) {
    EXPECT_EQ(sectors(app, 1 << 20, 20, 16, 63), 2048u) << app;
  }
  EXPECT_EQ(sectors("tap\0", 1 << 20, 20, 16, 63), 2048u);
  EXPECT_EQ(sectors("tap ", 1 << 20, 20, 16, 63), 20u * 16 * 63);
}

TEST(VpcFormatTest, MaximumGeometryAndOverrides) {
  EXPECT_EQ(sectors("vpc ", uint64_t(200) << 30, 65535, 16, 255), (uint64_t(200) << 30) / 512);
  EXPECT_EQ(sectors("win ", 1 << 20, 20, 16, 63, SizeCalc::kChs), 20u * 16 * 63);
  EXPECT_EQ(sectors("vpc ", 1 << 20, 20, 16, 63, SizeCalc::kCurrentSize), 2048u);
  // The maximum geometry means the footer's size even when asked for CHS.
  EXPECT_EQ(sectors("vpc ", 1 << 20, 65535, 16, 255, SizeCalc::kChs), 2048u);
  EXPECT_FALSE(parse_size_calc("geometry"));
  EXPECT_EQ(*parse_size_calc(""), SizeCalc::kAuto);
}

TEST(VpcFormatTest, FooterChecks) {
  auto f = footer("vpc ", 1 << 20, 20, 16, 63);
  f[100] ^= 1;
  auto r = parse_footer(f);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message, "Incorrect header checksum");
  f[0] = 'C';
  EXPECT_EQ(parse_footer(f).error().message, "invalid VPC image");
}

std::vector<uint8_t> dynamic_header(uint32_t entries, uint32_t block_size) {
  std::vector<uint8_t> h(512, 0);
  std::memcpy(h.data(), "cxsparse", 8);
  put_be(h, 16, 1536, 8);
  put_be(h, 28, entries, 4);
  put_be(h, 32, block_size, 4);
  return h;
}

TEST(VpcFormatTest, DynamicHeader) {
  auto h = parse_dynamic_header(dynamic_header(5, 2 << 20), 20000);
  ASSERT_TRUE(h) << h.error().message;
  EXPECT_EQ(h->table_offset, 1536u);
  EXPECT_EQ(h->bitmap_size, 512u);
  EXPECT_EQ(parse_dynamic_header(dynamic_header(5, 3000), 100).error().message,
            "Invalid block size 3000");
  EXPECT_EQ(parse_dynamic_header(dynamic_header(5, 256), 100).error().message,
            "Invalid block size 256");
  EXPECT_EQ(parse_dynamic_header(dynamic_header(1, 2 << 20), 20000).error().message,
            "Page table too small");
  EXPECT_EQ(parse_dynamic_header(dynamic_header(0x80000000, 512), 100).error().message,
            "Max Table Entries too large (-2147483648)");
  auto bad = dynamic_header(5, 2 << 20);
  bad[0] = 'X';
  EXPECT_EQ(parse_dynamic_header(bad, 100).error().message, "Invalid header magic");
}

}  // namespace
}  // namespace strata::vpc
