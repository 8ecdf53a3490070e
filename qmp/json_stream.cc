// Framing of the QMP byte stream into top-level JSON values.
#include "qmp/json_stream.h"

#include <cctype>
#include <cstdio>

namespace strata::qmp {

bool is_stray_byte(unsigned char c) {
  if (c == '\t' || c == '\r' || c == '\n') return false;
  return c < 0x20 || c == 0x7f || c == 0xfe || c == 0xff;
}

namespace {

bool is_word_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '-' || c == '.' ||
         c == '_';
}

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

std::string describe_byte(unsigned char c) {
  if (c < 0x80) return std::string(1, static_cast<char>(c));
  char buf[8];
  std::snprintf(buf, sizeof(buf), "\\x%02x", c);
  return buf;
}

}  // namespace

void JsonStreamReader::feed(std::string_view data, std::vector<JsonMessage>* out) {
  for (char c : data) feed_char(c, out);
}

void JsonStreamReader::reset() {
  mode_ = Mode::kIdle;
  buffer_.clear();
  buffer_.shrink_to_fit();
  depth_ = 0;
  quote_ = 0;
  escape_ = false;
  top_string_ = false;
  overflowed_ = false;
}

void JsonStreamReader::fail(std::string reason, std::vector<JsonMessage>* out) {
  out->push_back(JsonMessage{std::nullopt, "JSON parse error, " + std::move(reason)});
}

void JsonStreamReader::append(char c, std::vector<JsonMessage>* out) {
  if (overflowed_) return;
  if (buffer_.size() >= limits_.max_message_bytes) {
    overflowed_ = true;
    buffer_.clear();
    buffer_.shrink_to_fit();
    fail("message too large (limit " + std::to_string(limits_.max_message_bytes) + " bytes)", out);
    return;
  }
  buffer_.push_back(c);
}

void JsonStreamReader::finish(std::vector<JsonMessage>* out) {
  if (!overflowed_) {
    std::string error;
    auto value = parse_qmp_json(buffer_, &error, limits_.max_depth);
    if (value) {
      out->push_back(JsonMessage{std::move(value), {}});
    } else {
      fail(error, out);
    }
  }
  reset();
}

void JsonStreamReader::feed_char(char c, std::vector<JsonMessage>* out) {
  switch (mode_) {
    case Mode::kIdle:
      return idle_char(c, out);
    case Mode::kStructure:
      return structure_char(c, out);
    case Mode::kString:
      return string_char(c, out);
    case Mode::kWord:
      return word_char(c, out);
  }
}

void JsonStreamReader::idle_char(char c, std::vector<JsonMessage>* out) {
  auto uc = static_cast<unsigned char>(c);
  if (is_space(c)) return;
  if (is_stray_byte(uc)) return fail("stray '" + describe_byte(uc) + "'", out);
  if (c == '{' || c == '[') {
    mode_ = Mode::kStructure;
    depth_ = 1;
    append(c, out);
  } else if (c == '"' || c == '\'') {
    mode_ = Mode::kString;
    quote_ = c;
    top_string_ = true;
    append(c, out);
  } else if (c == '}' || c == ']' || c == ':' || c == ',') {
    fail("expecting value", out);
  } else if (is_word_char(c)) {
    mode_ = Mode::kWord;
    append(c, out);
  } else {
    fail("stray '" + describe_byte(uc) + "'", out);
  }
}

void JsonStreamReader::string_char(char c, std::vector<JsonMessage>* out) {
  append(c, out);
  if (escape_) {
    escape_ = false;
  } else if (c == '\\') {
    escape_ = true;
  } else if (c == quote_) {
    quote_ = 0;
    if (top_string_) {
      finish(out);
    } else {
      mode_ = Mode::kStructure;
    }
  }
}

void JsonStreamReader::structure_char(char c, std::vector<JsonMessage>* out) {
  auto uc = static_cast<unsigned char>(c);
  if (is_stray_byte(uc)) {
    // A lexical error drops the unfinished value, as QEMU's lexer does.
    reset();
    return fail("stray '" + describe_byte(uc) + "'", out);
  }
  append(c, out);
  if (c == '"' || c == '\'') {
    mode_ = Mode::kString;
    quote_ = c;
    top_string_ = false;
  } else if (c == '{' || c == '[') {
    if (++depth_ > limits_.max_depth && !overflowed_) {
      overflowed_ = true;
      buffer_.clear();
      buffer_.shrink_to_fit();
      fail("nesting too deep (limit " + std::to_string(limits_.max_depth) + ")", out);
    }
  } else if (c == '}' || c == ']') {
    if (--depth_ == 0) finish(out);
  }
}

void JsonStreamReader::word_char(char c, std::vector<JsonMessage>* out) {
  if (is_word_char(c)) return append(c, out);
  finish(out);
  idle_char(c, out);
}

}  // namespace strata::qmp
