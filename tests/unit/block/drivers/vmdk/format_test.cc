#include "block/drivers/vmdk/format.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

namespace strata::vmdk {
namespace {

void put32(std::vector<uint8_t>& b, size_t at, uint32_t v) {
  for (int i = 0; i < 4; i++) b[at + i] = uint8_t(v >> (8 * i));
}
void put64(std::vector<uint8_t>& b, size_t at, uint64_t v) {
  for (int i = 0; i < 8; i++) b[at + i] = uint8_t(v >> (8 * i));
}

// The header qemu-img writes for a 1 GiB monolithicSparse image.
std::vector<uint8_t> header() {
  std::vector<uint8_t> b(512, 0);
  std::memcpy(b.data(), "KDMV", 4);
  put32(b, 4, 1);         // version
  put32(b, 8, 3);         // flags
  put64(b, 12, 2097152);  // capacity
  put64(b, 20, 128);      // granularity
  put64(b, 28, 1);        // descriptor
  put64(b, 36, 20);
  put32(b, 44, 512);  // grain table entries
  put64(b, 48, 21);   // redundant directory
  put64(b, 56, 200);  // directory
  put64(b, 64, 448);  // grains from
  b[77] = 0;          // no compression
  return b;
}

TEST(VmdkFormatTest, Vmdk4Header) {
  auto h = check_vmdk4(read_vmdk4_header(header()), 1000);
  ASSERT_TRUE(h) << h.error().message;
  EXPECT_EQ(h->capacity, 2097152u);
  EXPECT_EQ(h->grain_sectors, 128u);
  EXPECT_EQ(h->l2_entries, 512u);
  EXPECT_EQ(h->l1_entries, 32u);  // 2097152 / (512 * 128)
  EXPECT_EQ(h->l1_offset, 200u * 512);
  EXPECT_FALSE(h->compressed);
}

TEST(VmdkFormatTest, Vmdk4RefusalsInQemusOrder) {
  auto refused = [](std::vector<uint8_t> b, uint64_t file_sectors = 1000) {
    auto h = check_vmdk4(read_vmdk4_header(b), file_sectors);
    return h ? std::string() : h.error().message;
  };
  auto b = header();
  put32(b, 4, 4);
  EXPECT_EQ(refused(b), "Unsupported VMDK version 4");
  b = header();
  put32(b, 44, 513);
  EXPECT_EQ(refused(b), "L2 table size too big");
  b = header();
  put32(b, 44, 0);
  EXPECT_EQ(refused(b), "L1 entry size is invalid");
  // 512 * 2^23 is 2^32: zero in QEMU's 32 bits.
  b = header();
  put64(b, 20, uint64_t(1) << 23);
  EXPECT_EQ(refused(b), "L1 entry size is invalid");
  EXPECT_EQ(refused(header(), 100), "File truncated, expecting at least 229376 bytes");
  b = header();
  put64(b, 20, 0x200001);
  EXPECT_EQ(refused(b), "Invalid granularity, image may be corrupt");
  b = header();
  put64(b, 12, uint64_t(1) << 50);
  put64(b, 20, 1);
  EXPECT_EQ(refused(b), "L1 size too big");
}

TEST(VmdkFormatTest, StreamFooter) {
  std::vector<uint8_t> f(kFooterBytes, 0);
  put32(f, 12, kMarkerFooter);
  auto h = header();
  std::memcpy(f.data() + 512, h.data(), 512);
  auto r = read_stream_footer(f);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->gd_offset, 200u);
  put32(f, 1024 + 12, 1);  // end-of-stream marker of the wrong type
  EXPECT_FALSE(read_stream_footer(f));
}

TEST(VmdkFormatTest, Vmdk3Header) {
  std::vector<uint8_t> b(512, 0);
  std::memcpy(b.data(), "COWD", 4);
  put32(b, 4, 1);
  put32(b, 12, 4096);  // sectors
  put32(b, 16, 8);     // granularity
  put32(b, 20, 4);     // directory sector
  put32(b, 24, 1);     // directory entries
  auto h = parse_vmdk3(b);
  ASSERT_TRUE(h) << h.error().message;
  EXPECT_EQ(h->capacity, 4096u);
  EXPECT_EQ(h->l2_entries, 4096u);
  EXPECT_EQ(h->l1_offset, 2048u);
  put32(b, 16, 0);
  EXPECT_FALSE(parse_vmdk3(b));
}

}  // namespace
}  // namespace strata::vmdk
