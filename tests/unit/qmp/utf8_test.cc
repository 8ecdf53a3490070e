// Modified UTF-8 with QEMU's validity rules.
#include "qmp/utf8.h"

#include <gtest/gtest.h>

namespace strata::qmp {
namespace {

struct Decoded {
  int32_t cp;
  size_t length;
};

Decoded decode(std::string_view s) {
  Decoded d{};
  d.cp = decode_mod_utf8(s, &d.length);
  return d;
}

TEST(ModUtf8, DecodesValidSequences) {
  EXPECT_EQ(decode("A").cp, 'A');
  EXPECT_EQ(decode("\xc3\xa9").cp, 0xe9);
  EXPECT_EQ(decode("\xe2\x82\xac").cp, 0x20ac);
  auto d = decode("\xf0\x9f\x98\x80rest");
  EXPECT_EQ(d.cp, 0x1f600);
  EXPECT_EQ(d.length, 4u);
  // U+0000 is the one overlong form allowed.
  d = decode("\xc0\x80");
  EXPECT_EQ(d.cp, 0);
  EXPECT_EQ(d.length, 2u);
}

TEST(ModUtf8, RefusesInvalidSequencesAndCountsTheirBytesAsQemu) {
  struct Case {
    const char* bytes;
    size_t length;
  } cases[] = {
      {"\xff", 1},                      // impossible byte
      {"\xfe\x80", 1},                  // impossible byte
      {"\x80", 1},                      // stray continuation byte
      {"\xc3", 1},                      // truncated: lead byte only
      {"\xe2\x82", 2},                  // truncated after one continuation byte
      {"\xe2\x82x", 2},                 // a non-continuation byte is not taken
      {"\xc0\xaf", 2},                  // overlong
      {"\xe0\x80\xaf", 3},              // overlong
      {"\xf0\x80\x80\xaf", 4},          // overlong
      {"\xed\xa0\x80", 3},              // surrogate U+D800
      {"\xed\xbf\xbf", 3},              // surrogate U+DFFF
      {"\xf4\x90\x80\x80", 4},          // above U+10FFFF
      {"\xf8\x88\x80\x80\x80", 5},      // old 5-byte form
      {"\xfc\x84\x80\x80\x80\x80", 6},  // old 6-byte form
      {"\xef\xbf\xbe", 3},              // noncharacter U+FFFE
      {"\xef\xb7\x90", 3},              // noncharacter U+FDD0
      {"\xf4\x8f\xbf\xbf", 4},          // noncharacter U+10FFFF
  };
  for (const auto& c : cases) {
    auto d = decode(c.bytes);
    EXPECT_EQ(d.cp, -1) << testing::PrintToString(c.bytes);
    EXPECT_EQ(d.length, c.length) << testing::PrintToString(c.bytes);
  }
  EXPECT_EQ(decode("").length, 0u);
}

TEST(ModUtf8, EncodesValidCodePointsOnly) {
  std::string s;
  EXPECT_TRUE(append_mod_utf8(&s, 0));
  EXPECT_TRUE(append_mod_utf8(&s, 'x'));
  EXPECT_TRUE(append_mod_utf8(&s, 0x10fffd));
  EXPECT_EQ(s, std::string("\xc0\x80x\xf4\x8f\xbf\xbd"));
  for (int64_t bad : {-1L, 0xd800L, 0xdfffL, 0xfffeL, 0xffffL, 0xfdd0L, 0x1fffeL, 0x110000L}) {
    EXPECT_FALSE(append_mod_utf8(&s, bad)) << bad;
  }
  EXPECT_EQ(s.size(), 7u);
}

}  // namespace
}  // namespace strata::qmp
