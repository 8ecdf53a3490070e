#include "block/drivers/vmdk/descriptor.h"

#include <gtest/gtest.h>

namespace strata::vmdk {
namespace {

std::string desc(const std::string& type, const std::string& extents) {
  return "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"" +
         type + "\"\n\n# Extent description\n" + extents + "\n# The Disk Data Base\n#DDB\n";
}

TEST(VmdkDescriptorTest, ExtentsOfEveryType) {
  auto d = parse_descriptor(desc("twoGbMaxExtentSparse",
                                 "RW 4194304 SPARSE \"a-s001.vmdk\"\n"
                                 "RW 100 FLAT \"/abs/b.raw\" 7\n"
                                 "RW 200 VMFS \"c.raw\"\n"
                                 "RW 300 VMFSSPARSE \"d.vmdk\"\r\n"));
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_EQ(d->create_type, "twoGbMaxExtentSparse");
  ASSERT_EQ(d->extents.size(), 4u);
  EXPECT_EQ(d->extents[0].type, "SPARSE");
  EXPECT_EQ(d->extents[0].sectors, 4194304u);
  EXPECT_EQ(d->extents[0].filename, "a-s001.vmdk");
  EXPECT_EQ(d->extents[1].filename, "/abs/b.raw");
  EXPECT_EQ(d->extents[1].flat_offset, 7u);
  EXPECT_EQ(d->extents[2].type, "VMFS");
  EXPECT_EQ(d->extents[2].flat_offset, 0u);
  EXPECT_EQ(d->extents[3].type, "VMFSSPARSE");
}

TEST(VmdkDescriptorTest, LinesQemuSkips) {
  auto d = parse_descriptor(desc("monolithicFlat",
                                 "RDONLY 100 FLAT \"ro.raw\" 0\n"    // not RW
                                 "NOACCESS 100 FLAT \"na.raw\" 0\n"  // not RW
                                 "RW 0 FLAT \"zero.raw\" 0\n"        // no sectors
                                 "RW -5 FLAT \"neg.raw\" 0\n"
                                 "RW 100 ZERO \"z.raw\"\n"  // unknown type
                                 "RW 100 FLAT \"\" 0\n"     // empty name
                                 "RW abc FLAT \"x.raw\" 0\n"
                                 "\n"
                                 "RW 100 FLAT \"ok.raw\" 0\n"));
  ASSERT_TRUE(d) << d.error().message;
  ASSERT_EQ(d->extents.size(), 1u);
  EXPECT_EQ(d->extents[0].filename, "ok.raw");
}

TEST(VmdkDescriptorTest, WrongFieldCountsAreInvalid) {
  for (const char* line :
       {"RW 100 FLAT \"a.raw\"", "RW 100 FLAT \"a.raw\" -1", "RW 100 VMFS \"a.raw\" 5",
        "RW 100 SPARSE \"a.vmdk\" 5", "RW 100 UNKNOWN \"a.vmdk\" 5"}) {
    auto d = parse_descriptor(desc("monolithicFlat", line));
    ASSERT_FALSE(d) << line;
    EXPECT_EQ(d.error().message, std::string("Invalid extent line: ") + line);
  }
}

TEST(VmdkDescriptorTest, CreateTypes) {
  auto d = parse_descriptor("version=1\nRW 1 FLAT \"a\" 0\n");
  ASSERT_FALSE(d);
  EXPECT_EQ(d.error().message, "invalid VMDK image descriptor");
  for (const char* t : {"monolithicSparse", "streamOptimized", "custom"}) {
    d = parse_descriptor(desc(t, ""));
    ASSERT_FALSE(d);
    EXPECT_EQ(d.error().message, std::string("Unsupported image type '") + t + "'");
  }
  d = parse_descriptor(desc("vmfs", ""));
  ASSERT_TRUE(d);
  EXPECT_TRUE(d->extents.empty());
}

TEST(VmdkDescriptorTest, DescriptionValueIsQemus) {
  EXPECT_EQ(description_value("createType=\"vmfs\"", "createType"), "vmfs");
  EXPECT_EQ(description_value("createType=\"unterminated", "createType"), std::nullopt);
  EXPECT_EQ(description_value("createType", "createType"), std::nullopt);
  EXPECT_EQ(description_value("createType=\"" + std::string(128, 'x') + "\"", "createType"),
            std::nullopt);
  EXPECT_EQ(description_value("createType=\"" + std::string(127, 'x') + "\"", "createType"),
            std::string(127, 'x'));
}

TEST(VmdkDescriptorTest, CidsAndParentHint) {
  std::string text = "CID=1a2b3c4d\nparentCID=ffffffff\nparentFileNameHint=\"../base.vmdk\"\n";
  EXPECT_EQ(read_cid(text, false), 0x1a2b3c4du);
  EXPECT_EQ(read_cid(text, true), 0xffffffffu);
  auto hint = parent_hint(text);
  ASSERT_TRUE(hint);
  EXPECT_EQ(*hint, std::optional<std::string>("../base.vmdk"));
  EXPECT_EQ(read_cid("nothing", false), std::nullopt);
  EXPECT_EQ(read_cid("CID=zz", false), std::nullopt);
  // Only parentCID: QEMU's search for "CID" finds it there.
  EXPECT_EQ(read_cid("parentCID=12", false), 0x12u);
  auto none = parent_hint("CID=1\n");
  ASSERT_TRUE(none);
  EXPECT_FALSE(*none);
  EXPECT_FALSE(parent_hint("parentFileNameHint=\"open"));
}

TEST(VmdkDescriptorTest, TextEndsAtNul) {
  std::string bytes("abc\0def", 7);
  EXPECT_EQ(descriptor_text(bytes), "abc");
}

}  // namespace
}  // namespace strata::vmdk
