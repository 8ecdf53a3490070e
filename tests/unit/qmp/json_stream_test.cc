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

std::string error_of(std::string_view input) {
  JsonStreamReader r;
  auto m = feed_all(r, input);
  if (m.empty()) return "(nothing)";
  return m[0].value ? "(a value)" : m[0].error;
}

TEST(JsonStream, InvalidUtf8InStringsIsRefusedNotRepaired) {
  for (const char* bytes :
       {"\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xed\xa0\xbd\xed\xb8\x80", "\xf4\x90\x80\x80",
        "\xf8\x88\x80\x80\x80", "\xc3", "\xe2\x82", "\x80", "\xef\xbf\xbe"}) {
    std::string input = std::string("{\"a\": \"x") + bytes + "y\"}";
    EXPECT_EQ(error_of(input), "JSON parse error, invalid UTF-8 sequence in string")
        << testing::PrintToString(bytes);
    // The same in a key and in a single-quoted string.
    EXPECT_EQ(error_of(std::string("{'") + bytes + "': 1}"),
              "JSON parse error, invalid UTF-8 sequence in string");
  }
}

TEST(JsonStream, ValidUtf8AndNulAreKeptInModifiedUtf8) {
  JsonStreamReader r;
  auto m = feed_all(r,
                    "[\"\xc3\xa9\xf0\x9f\x98\x80\", \"a\\u0000b\", \"a\xc0\x80"
                    "b\", \"\x7f\"]");
  ASSERT_EQ(m.size(), 1u);
  ASSERT_TRUE(m[0].value) << m[0].error;
  EXPECT_EQ((*m[0].value)[0], "\xc3\xa9\xf0\x9f\x98\x80");
  // U+0000 is held as C0 80, however it was sent.
  EXPECT_EQ((*m[0].value)[1],
            "a\xc0\x80"
            "b");
  EXPECT_EQ((*m[0].value)[2],
            "a\xc0\x80"
            "b");
  EXPECT_EQ((*m[0].value)[3], "\x7f");
}

TEST(JsonStream, UnicodeEscapesAsQemu) {
  struct Case {
    const char* escape;
    const char* error;
  } cases[] = {
      {"\\ud800", "\\ud800 is not a valid Unicode character"},
      {"\\udc00", "\\udc00 is not a valid Unicode character"},
      {"\\ud800\\u0041", "\\ud800 is not a valid Unicode character"},
      {"\\ud800\\u12", "\\ud800 is not a valid Unicode character"},
      {"\\udbff\\udfff", "\\udbff\\udfff is not a valid Unicode character"},
      {"\\ufffe", "\\ufffe is not a valid Unicode character"},
      {"\\uFDD0", "\\uFDD0 is not a valid Unicode character"},
      {"\\uzzzz", "\\uzzzz is not a valid Unicode character"},
      // The quoted text stops at the end of the string token.
      {"\\u12", "\\u12\" is not a valid Unicode character"},
      {"\\u", "\\u\" is not a valid Unicode character"},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(error_of(std::string("\"") + c.escape + "\""),
              std::string("JSON parse error, ") + c.error)
        << c.escape;
  }
  JsonStreamReader r;
  auto m = feed_all(r, R"(["\ud83d\ude00", "\uDBFF\uDFFD"])");
  ASSERT_TRUE(m[0].value) << m[0].error;
  EXPECT_EQ((*m[0].value)[0], "\xf0\x9f\x98\x80");
  EXPECT_EQ((*m[0].value)[1], "\xf4\x8f\xbf\xbd");
}

TEST(JsonStream, DuplicateKeyIsRefused) {
  EXPECT_EQ(error_of(R"({"a": 1, "a": 2})"), "JSON parse error, duplicate key");
}

TEST(JsonStream, LexicalErrorsQuoteTheTokenAndResynchronise) {
  JsonStreamReader r;
  // A control character, 0xFF or 0xFE inside a string is an error of the
  // lexer: the token so far is quoted (up to a zero byte), the value is
  // dropped and input is skipped up to a structural character.
  std::string input =
      "{\"id\": \"a\x01"
      "b\"}\n{\"ok\": 1}{\"x\": \"\xff\"} , ";
  input += std::string("[\"a\0b\"]", 7) + "[2]";
  auto m = feed_all(r, input);
  ASSERT_EQ(m.size(), 9u);
  EXPECT_EQ(m[0].error, "JSON parse error, stray '\"a\x01'");
  EXPECT_EQ(m[1].error, "JSON parse error, expecting value");  // the "}"
  EXPECT_EQ((*m[2].value)["ok"], 1);
  EXPECT_EQ(m[3].error, "JSON parse error, stray '\"\xff'");
  EXPECT_EQ(m[4].error, "JSON parse error, expecting value");  // the "}"
  EXPECT_EQ(m[5].error, "JSON parse error, expecting value");  // the ","
  EXPECT_EQ(m[6].error, "JSON parse error, stray '\"a'");
  EXPECT_EQ(m[7].error, "JSON parse error, expecting value");  // the "]"
  EXPECT_EQ((*m[8].value)[0], 2);
}

TEST(JsonStream, TokensAsQemusLexer) {
  EXPECT_EQ(error_of("True "), "JSON parse error, stray 'T'");
  EXPECT_EQ(error_of("01 "), "JSON parse error, stray '01'");
  EXPECT_EQ(error_of("- "), "JSON parse error, stray '- '");
  EXPECT_EQ(error_of("1. "), "JSON parse error, stray '1. '");
  EXPECT_EQ(error_of("1e+ "), "JSON parse error, stray '1e+ '");
  EXPECT_EQ(error_of("[nul]"), "JSON parse error, invalid keyword 'nul'");
  EXPECT_EQ(error_of("{\"a\": 12x}"), "JSON parse error, expected separator in dict");
  JsonStreamReader r;
  auto m = feed_all(r, "0e5 -0.5E+2 ");
  ASSERT_EQ(m.size(), 4u);
  EXPECT_EQ(*m[0].value, 0);
  EXPECT_EQ(m[1].error, "JSON parse error, invalid keyword 'e'");
  EXPECT_EQ(*m[2].value, 5);
  EXPECT_DOUBLE_EQ(m[3].value->get<double>(), -50.0);
}

TEST(JsonStream, BuffersAreGivenBackAfterALargeValue) {
  JsonStreamReader r;
  std::vector<JsonMessage> out;
  r.feed("{\"a\": \"" + std::string(1 << 20, 'x') + "\"}", &out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(r.pending_bytes(), 0u);
  EXPECT_LE(r.capacity_bytes(), 8192u);
}

}  // namespace
}  // namespace strata::qmp
