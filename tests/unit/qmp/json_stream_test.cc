// The QMP stream reader: framing, dialect, errors and bounds.
#include "qmp/json_stream.h"

#include <gtest/gtest.h>

namespace strata::qmp {
namespace {

std::vector<JsonMessage> feed_all(JsonStreamReader& r, std::string_view s) {
  std::vector<JsonMessage> out;
  r.feed(s, &out);
  return out;
}

TEST(JsonStream, WholeRequest) {
  JsonStreamReader r;
  auto m = feed_all(r, "{\"execute\": \"quit\"}\n");
  ASSERT_EQ(m.size(), 1u);
  ASSERT_TRUE(m[0].value);
  EXPECT_EQ((*m[0].value)["execute"], "quit");
}

TEST(JsonStream, SplitAtEveryByte) {
  JsonStreamReader r;
  std::string text = R"({"execute": "x", "arguments": {"a": [1, "}]", {"b": "\"{"}]}})";
  std::vector<JsonMessage> out;
  for (char c : text) r.feed(std::string_view(&c, 1), &out);
  ASSERT_EQ(out.size(), 1u);
  ASSERT_TRUE(out[0].value) << out[0].error;
  EXPECT_EQ((*out[0].value)["arguments"]["a"][1], "}]");
  EXPECT_EQ((*out[0].value)["arguments"]["a"][2]["b"], "\"{");
  EXPECT_EQ(r.pending_bytes(), 0u);
}

TEST(JsonStream, SeveralPerRead) {
  JsonStreamReader r;
  auto m = feed_all(r, R"({"a":1}{"b":2}  [3] "s" 42 )");
  ASSERT_EQ(m.size(), 5u);
  EXPECT_EQ((*m[0].value)["a"], 1);
  EXPECT_EQ((*m[1].value)["b"], 2);
  EXPECT_TRUE(m[2].value->is_array());
  EXPECT_EQ(*m[3].value, "s");
  EXPECT_EQ(*m[4].value, 42);
}

TEST(JsonStream, SingleQuotesAndEscapes) {
  JsonStreamReader r;
  auto m =
      feed_all(r, R"({'execute': 'x', 'id': 'it\'s', "d": "a'b\"c", "u": "\u00e9\ud83d\ude00"})");
  ASSERT_EQ(m.size(), 1u);
  ASSERT_TRUE(m[0].value) << m[0].error;
  EXPECT_EQ((*m[0].value)["id"], "it's");
  EXPECT_EQ((*m[0].value)["d"], "a'b\"c");
  EXPECT_EQ((*m[0].value)["u"], "\xc3\xa9\xf0\x9f\x98\x80");
}

TEST(JsonStream, ParseErrorsMatchQemu) {
  struct Case {
    const char* input;
    const char* error;
  } cases[] = {
      {"{\"execute\": }", "JSON parse error, expecting value"},
      {"{\"a\" 1}", "JSON parse error, missing : in object pair"},
      {"{1:2}", "JSON parse error, key is not a string in object"},
      {"[1 2]", "JSON parse error, expected separator in list"},
      {"{\"a\":1 \"b\":2}", "JSON parse error, expected separator in dict"},
      {"{\"a\":1,}", "JSON parse error, expecting value"},
      {"abc ", "JSON parse error, invalid keyword 'abc'"},
      {"}", "JSON parse error, expecting value"},
      {"{\"a\":\"\\x\"}", "JSON parse error, invalid escape sequence in string"},
  };
  for (const auto& c : cases) {
    JsonStreamReader r;
    auto m = feed_all(r, c.input);
    ASSERT_EQ(m.size(), 1u) << c.input;
    EXPECT_FALSE(m[0].value) << c.input;
    EXPECT_EQ(m[0].error, c.error) << c.input;
  }
}

TEST(JsonStream, RecoversAfterGarbage) {
  JsonStreamReader r;
  auto m = feed_all(r, "{\"a\": [1, \x01 {\"ok\": true}\n\xff{\"ok\": 2}");
  ASSERT_EQ(m.size(), 4u);
  EXPECT_EQ(m[0].error, "JSON parse error, stray '\x01'");
  EXPECT_EQ((*m[1].value)["ok"], true);
  EXPECT_FALSE(m[2].value);
  EXPECT_EQ((*m[3].value)["ok"], 2);
}

TEST(JsonStream, NumbersKeepTheirRange) {
  JsonStreamReader r;
  auto m = feed_all(r, "[18446744073709551615, -9223372036854775808, 1.5e3, -1]");
  ASSERT_TRUE(m[0].value);
  const auto& a = *m[0].value;
  EXPECT_EQ(a[0].get<uint64_t>(), 18446744073709551615ull);
  EXPECT_EQ(a[1].get<int64_t>(), INT64_MIN);
  EXPECT_DOUBLE_EQ(a[2].get<double>(), 1500.0);
  EXPECT_EQ(a[3].get<int64_t>(), -1);
}

TEST(JsonStream, HugeMessageIsBoundedAndSkipped) {
  JsonLimits limits;
  limits.max_message_bytes = 1024;
  JsonStreamReader r(limits);
  std::string huge = "{\"a\": \"" + std::string(100000, 'x') + "\", \"b\": [\"}\"]}";
  std::vector<JsonMessage> out;
  for (size_t i = 0; i < huge.size(); i += 777) r.feed(std::string_view(huge).substr(i, 777), &out);
  EXPECT_LE(r.pending_bytes(), 1024u);
  r.feed("{\"next\": 1}", &out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_FALSE(out[0].value);
  EXPECT_NE(out[0].error.find("too large"), std::string::npos);
  EXPECT_EQ((*out[1].value)["next"], 1);
}

TEST(JsonStream, DeepNestingIsRefused) {
  JsonLimits limits;
  limits.max_depth = 64;
  JsonStreamReader r(limits);
  std::string deep = std::string(100, '[') + std::string(100, ']');
  auto m = feed_all(r, deep + "{\"ok\":1}");
  ASSERT_EQ(m.size(), 2u);
  EXPECT_FALSE(m[0].value);
  EXPECT_EQ((*m[1].value)["ok"], 1);
}

}  // namespace
}  // namespace strata::qmp
