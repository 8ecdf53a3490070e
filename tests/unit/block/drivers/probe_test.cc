#include "block/drivers/probe/probe.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "block/core/graph.h"
#include "strata/engine.h"
#include "unit/block/drivers/temp_dir.h"

namespace strata {
namespace {

using Bytes = std::vector<uint8_t>;

Bytes head_with(std::initializer_list<std::pair<size_t, std::string>> fields) {
  Bytes h(probe::kHeadBytes, 0);
  for (const auto& [at, s] : fields) std::memcpy(h.data() + at, s.data(), s.size());
  return h;
}

std::string be32(uint32_t v) {
  return {char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
}
std::string le32(uint32_t v) {
  return {char(v), char(v >> 8), char(v >> 16), char(v >> 24)};
}

std::string probe(const Bytes& h, std::string_view name = "disk.img") {
  return probe::probe_head(h, name);
}

TEST(ProbeTest, EmptyAndUnknownHeadsAreRaw) {
  EXPECT_EQ(probe({}), "raw");
  EXPECT_EQ(probe(Bytes(probe::kHeadBytes, 0xAB)), "raw");
  EXPECT_EQ(probe(head_with({{0, "hello world"}})), "raw");
}

TEST(ProbeTest, QcowVersionsPickQcowOrQcow2) {
  EXPECT_EQ(probe(head_with({{0, "QFI\xfb" + be32(3)}})), "qcow2");
  EXPECT_EQ(probe(head_with({{0, "QFI\xfb" + be32(2)}})), "qcow2");
  // QEMU's qcow2 probe takes any version from 2 up (the open refuses it).
  EXPECT_EQ(probe(head_with({{0, "QFI\xfb" + be32(7)}})), "qcow2");
  EXPECT_EQ(probe(head_with({{0, "QFI\xfb" + be32(1)}})), "qcow");
  EXPECT_EQ(probe(head_with({{0, "QFI\xfb" + be32(0)}})), "raw");
  // A file of only the magic: the version reads as zero.
  EXPECT_EQ(probe(Bytes{'Q', 'F', 'I', 0xfb}), "raw");
}

TEST(ProbeTest, MagicNumbers) {
  EXPECT_EQ(probe(head_with({{0, std::string("QED\0", 4)}})), "qed");
  EXPECT_EQ(probe(head_with({{0, "KDMV"}})), "vmdk");
  EXPECT_EQ(probe(head_with({{0, "COWD"}})), "vmdk");
  EXPECT_EQ(probe(head_with({{0, "conectix"}})), "vpc");
  EXPECT_EQ(probe(head_with({{0, "vhdxfile"}})), "vhdx");
  EXPECT_EQ(probe(head_with({{0x40, le32(0xbeda107f)}})), "vdi");
  EXPECT_EQ(probe(head_with({{0, std::string("LUKS\xba\xbe\0\1", 8)}})), "luks");
  EXPECT_EQ(probe(head_with({{0, "WithoutFreeSpace" + le32(2)}})), "parallels");
  EXPECT_EQ(probe(head_with({{0, "WithouFreSpacExt" + le32(2)}})), "parallels");
}

TEST(ProbeTest, NearMissesStayRaw) {
  // LUKS2 is not probed by QEMU 7.2.
  EXPECT_EQ(probe(head_with({{0, std::string("LUKS\xba\xbe\0\2", 8)}})), "raw");
  EXPECT_EQ(probe(head_with({{0, "WithoutFreeSpace" + le32(3)}})), "raw");
  EXPECT_EQ(probe(head_with({{0, "QED"}, {3, "X"}})), "raw");
  EXPECT_EQ(probe(head_with({{0, "conectiX"}})), "raw");
  EXPECT_EQ(probe(head_with({{0x41, le32(0xbeda107f)}})), "raw");
}

TEST(ProbeTest, VmdkDescriptorText) {
  EXPECT_EQ(probe(head_with({{0, "# Disk DescriptorFile\nversion=1\nCID=1\n"}})), "vmdk");
  EXPECT_EQ(probe(head_with({{0, "version=3\r\n"}})), "vmdk");
  EXPECT_EQ(probe(head_with({{0, "#a\n#b\n   \n  \r\nversion=2\n"}})), "vmdk");
  // What QEMU's probe does not accept: an empty line, another version, no
  // end of line, anything before the version line.
  EXPECT_EQ(probe(head_with({{0, "# x\n\nversion=1\n"}})), "raw");
  EXPECT_EQ(probe(head_with({{0, "version=4\n"}})), "raw");
  EXPECT_EQ(probe(head_with({{0, "version=1"}})), "raw");
  EXPECT_EQ(probe(head_with({{0, "CID=1\nversion=1\n"}})), "raw");
  EXPECT_EQ(probe(head_with({{0, "  x\nversion=1\n"}})), "raw");
  // Only the first 512 bytes are probed (QEMU's BLOCK_PROBE_BUF_SIZE).
  std::string text = "#" + std::string(400, 'x') + "\nversion=1\n";
  EXPECT_EQ(probe(Bytes(text.begin(), text.end())), "vmdk");
  text = "#" + std::string(600, 'x') + "\nversion=1\n";
  EXPECT_EQ(probe(Bytes(text.begin(), text.end())), "raw");
}

TEST(ProbeTest, BochsNeedsEveryFieldTerminated) {
  std::string version = le32(0x00020000);
  EXPECT_EQ(probe(head_with(
                {{0, "Bochs Virtual HD Image"}, {32, "Redolog"}, {48, "Growing"}, {64, version}})),
            "bochs");
  EXPECT_EQ(probe(head_with({{0, "Bochs Virtual HD Image"},
                             {32, "Redolog"},
                             {48, "Growing"},
                             {64, le32(0x00010000)}})),
            "bochs");
  EXPECT_EQ(probe(head_with(
                {{0, "Bochs Virtual HD Image"}, {32, "Redolog"}, {48, "Undoable"}, {64, version}})),
            "raw");
  EXPECT_EQ(probe(head_with(
                {{0, "Bochs Virtual HD ImageX"}, {32, "Redolog"}, {48, "Growing"}, {64, version}})),
            "raw");
}

TEST(ProbeTest, WeakRulesBeatOnlyRaw) {
  std::string cloop =
      "#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n";
  EXPECT_EQ(probe(head_with({{0, cloop}})), "cloop");
  EXPECT_EQ(probe(head_with({}), "disk.dmg"), "dmg");
  EXPECT_EQ(probe(head_with({}), ".dmg"), "raw");
  EXPECT_EQ(probe(head_with({}), "disk.dmg.raw"), "raw");
  // A magic number wins over the file name.
  EXPECT_EQ(probe(head_with({{0, "QFI\xfb" + be32(3)}}), "disk.dmg"), "qcow2");
}

TEST(ProbeTest, ScoresAreQemus) {
  Bytes vdi = head_with({{0x40, le32(0xbeda107f)}});
  EXPECT_EQ(probe::score("vdi", vdi, "x"), 100);
  EXPECT_EQ(probe::score("raw", vdi, "x"), 1);
  EXPECT_EQ(probe::score("dmg", vdi, "x.dmg"), 2);
  EXPECT_EQ(probe::score("qcow2", vdi, "x"), 0);
  EXPECT_EQ(probe::score("nosuch", vdi, "x"), 0);
  // Scores are defined on a whole probe buffer only.
  EXPECT_EQ(probe::score("vdi", Bytes(100, 0), "x"), 0);
}

Bytes vhd_footer(bool good_checksum) {
  Bytes f(probe::kVhdFooterBytes, 0);
  std::memcpy(f.data(), "conectix", 8);
  f[60 + 3] = 2;  // fixed
  uint32_t sum = 0;
  for (uint8_t b : f) sum += b;
  uint32_t c = ~sum + (good_checksum ? 0 : 1);
  f[64] = uint8_t(c >> 24);
  f[65] = uint8_t(c >> 16);
  f[66] = uint8_t(c >> 8);
  f[67] = uint8_t(c);
  return f;
}

TEST(ProbeTest, VhdFooterChecksum) {
  EXPECT_TRUE(probe::is_vhd_footer(vhd_footer(true)));
  EXPECT_FALSE(probe::is_vhd_footer(vhd_footer(false)));
  EXPECT_FALSE(probe::is_vhd_footer(Bytes(100, 0)));
}

class ProbeFileTest : public ::testing::Test {
 protected:
  std::string write(const std::string& name, const Bytes& data) {
    std::string path = dir_.file(name);
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char*>(data.data()), std::streamsize(data.size()));
    return path;
  }
  Result<std::string> probe_file(const std::string& path) {
    return engine_.run(probe::co_probe_file(engine_.loop(), path));
  }
  Result<std::string> probe_driver(const std::string& path) {
    return engine_.run(probe::co_probe_driver(engine_.loop(), engine_.graph().drivers(), path));
  }
  testing::TempDir dir_;
  Engine engine_;
};

TEST_F(ProbeFileTest, FixedVhdIsFoundByItsFooter) {
  Bytes image(8192, 0x11);
  Bytes footer = vhd_footer(true);
  image.insert(image.end(), footer.begin(), footer.end());
  auto r = probe_file(write("fixed.vhd", image));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*r, "vpc");
  // A footer whose checksum does not match is data, as QEMU reads it.
  image[image.size() - 512 + 100] ^= 0x40;
  r = probe_file(write("bad.vhd", image));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*r, "raw");
}

TEST_F(ProbeFileTest, ShortAndEmptyFiles) {
  auto r = probe_file(write("empty", {}));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*r, "raw");
  r = probe_file(write("short", {'Q', 'F', 'I', 0xfb, 0, 0, 0, 3}));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*r, "qcow2");
}

TEST_F(ProbeFileTest, ErrorsNameTheFile) {
  auto r = probe_file(dir_.file("missing"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ENOENT);
  EXPECT_NE(r.error().message.find("Could not open '" + dir_.file("missing") + "'"),
            std::string::npos);
  std::filesystem::create_directory(dir_.file("d"));
  r = probe_file(dir_.file("d"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message, "Could not open '" + dir_.file("d") + "': 'file' driver requires '" +
                                   dir_.file("d") + "' to be a regular file");
}

TEST_F(ProbeFileTest, FormatsWithoutADriverAreRefusedByName) {
  std::string path = write("disk.qed", head_with({{0, std::string("QED\0", 4)}}));
  auto r = probe_driver(path);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ENOTSUP);
  EXPECT_EQ(r.error().message,
            "Could not open '" + path + "': image format 'qed' is not supported by Strata");
  r = probe_driver(write("disk.raw", Bytes(4096, 0)));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*r, "raw");
}

}  // namespace
}  // namespace strata
