// A recursive-descent JSON parser for QMP's dialect: RFC 8259 plus
// single-quoted strings and the \' escape. It reports QEMU's parse error
// reasons (QEMU 7.2's json-parser: invalid UTF-8, invalid \u escapes and
// duplicate keys are refused) and never throws.
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "qmp/json_stream.h"
#include "qmp/utf8.h"

namespace strata::qmp {

namespace {

using nlohmann::json;

class Parser {
 public:
  Parser(std::string_view text, size_t max_depth) : text_(text), max_depth_(max_depth) {}

  std::optional<json> parse_document(std::string* error) {
    json value;
    if (!parse_value(value, 0)) {
      *error = error_;
      return std::nullopt;
    }
    skip_space();
    if (pos_ != text_.size()) {
      *error = "expecting end of input";
      return std::nullopt;
    }
    return value;
  }

 private:
  bool fail(const char* reason) {
    if (error_.empty()) error_ = reason;
    return false;
  }
  void skip_space() {
    while (pos_ < text_.size() && std::strchr(" \t\r\n", text_[pos_]) && text_[pos_] != 0) pos_++;
  }
  bool peek(char c) {
    skip_space();
    return pos_ < text_.size() && text_[pos_] == c;
  }

  bool parse_value(json& out, size_t depth) {
    if (depth > max_depth_) return fail("nesting too deep");
    skip_space();
    if (pos_ >= text_.size()) return fail("expecting value");
    char c = text_[pos_];
    if (c == '{') return parse_object(out, depth + 1);
    if (c == '[') return parse_array(out, depth + 1);
    if (c == '"' || c == '\'') {
      std::string s;
      if (!parse_string(s)) return false;
      out = std::move(s);
      return true;
    }
    if (c == '-' || (c >= '0' && c <= '9')) return parse_number(out);
    if (std::isalpha(static_cast<unsigned char>(c))) return parse_keyword(out);
    return fail("expecting value");
  }

  bool parse_keyword(json& out) {
    size_t start = pos_;
    while (pos_ < text_.size() && std::isalnum(static_cast<unsigned char>(text_[pos_]))) pos_++;
    std::string_view word = text_.substr(start, pos_ - start);
    if (word == "true") {
      out = true;
    } else if (word == "false") {
      out = false;
    } else if (word == "null") {
      out = nullptr;
    } else {
      message_ = "invalid keyword '" + std::string(word) + "'";
      return fail(message_.c_str());
    }
    return true;
  }

  bool parse_number(json& out) {
    size_t start = pos_;
    if (text_[pos_] == '-') pos_++;
    bool is_float = false;
    while (pos_ < text_.size()) {
      char c = text_[pos_];
      if (c >= '0' && c <= '9') {
        pos_++;
      } else if (c == '.' || c == 'e' || c == 'E' || c == '+' || (c == '-' && pos_ > start)) {
        is_float = true;
        pos_++;
      } else {
        break;
      }
    }
    std::string token(text_.substr(start, pos_ - start));
    if (token == "-" || token.back() == '.' || token.back() == 'e' || token.back() == 'E') {
      return fail("invalid number");
    }
    if (!is_float) {
      errno = 0;
      char* end = nullptr;
      if (token[0] == '-') {
        long long v = std::strtoll(token.c_str(), &end, 10);
        if (errno == 0 && *end == 0) {
          out = static_cast<int64_t>(v);
          return true;
        }
      } else {
        unsigned long long v = std::strtoull(token.c_str(), &end, 10);
        if (errno == 0 && *end == 0) {
          if (v <= static_cast<unsigned long long>(INT64_MAX)) {
            out = static_cast<int64_t>(v);
          } else {
            out = static_cast<uint64_t>(v);
          }
          return true;
        }
      }
    }
    char* end = nullptr;
    double d = std::strtod(token.c_str(), &end);
    if (*end != 0) return fail("invalid number");
    out = d;
    return true;
  }

  // The index just past the closing quote of the string starting at
  // `start` (or the end of the text when it has none).
  size_t string_end(size_t start) const {
    char quote = text_[start];
    for (size_t i = start + 1; i < text_.size(); i++) {
      if (text_[i] == '\\') {
        i++;
      } else if (text_[i] == quote) {
        return i + 1;
      }
    }
    return text_.size();
  }

  // Four hex digits at `at` (within the string), or -1 as QEMU's cvt4hex.
  int32_t hex4(size_t at, size_t end) const {
    int32_t v = 0;
    for (size_t i = at; i < at + 4; i++) {
      if (i >= end || !std::isxdigit(static_cast<unsigned char>(text_[i]))) return -1;
      char c = text_[i];
      v = v * 16 + (c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
    }
    return v;
  }

  // After "\u" (pos_ at the digits): a code point, or a surrogate pair
  // written as two escapes. QEMU's message quotes the escape text.
  bool parse_unicode_escape(std::string& s, size_t backslash, size_t end) {
    int64_t cp = hex4(pos_, end);
    pos_ += 4;
    if (cp >= 0xd800 && cp <= 0xdbff && pos_ + 1 < end && text_[pos_] == '\\' &&
        text_[pos_ + 1] == 'u') {
      int32_t low = hex4(pos_ + 2, end);
      if (low >= 0xdc00 && low <= 0xdfff) {
        cp = 0x10000 + ((cp & 0x3ff) << 10) + (low & 0x3ff);
        pos_ += 6;
      } else {
        cp = -1;
      }
    }
    if (append_mod_utf8(&s, cp)) return true;
    message_ = std::string(text_.substr(backslash, std::min(pos_, end) - backslash)) +
               " is not a valid Unicode character";
    return fail(message_.c_str());
  }

  bool parse_escape(std::string& s, size_t end) {
    size_t backslash = pos_ - 1;
    if (pos_ >= end) return fail("invalid escape sequence in string");
    char c = text_[pos_++];
    switch (c) {
      case '"':
      case '\'':
      case '\\':
      case '/':
        s.push_back(c);
        return true;
      case 'b':
        s.push_back('\b');
        return true;
      case 'f':
        s.push_back('\f');
        return true;
      case 'n':
        s.push_back('\n');
        return true;
      case 'r':
        s.push_back('\r');
        return true;
      case 't':
        s.push_back('\t');
        return true;
      case 'u':
        return parse_unicode_escape(s, backslash, end);
      default:
        return fail("invalid escape sequence in string");
    }
  }

  // A string is kept in modified UTF-8 (U+0000 as C0 80); invalid UTF-8 is
  // refused, never repaired, so the bytes kept are the bytes QMP reports.
  bool parse_string(std::string& s) {
    size_t end = string_end(pos_);
    char quote = text_[pos_++];
    while (pos_ < text_.size()) {
      char c = text_[pos_];
      if (c == quote) {
        pos_++;
        return true;
      }
      if (c == '\\') {
        pos_++;
        if (!parse_escape(s, end)) return false;
        continue;
      }
      if (static_cast<unsigned char>(c) < 0x20) return fail("control character in string");
      size_t length = 0;
      if (decode_mod_utf8(text_.substr(pos_, end - pos_), &length) < 0) {
        return fail("invalid UTF-8 sequence in string");
      }
      s.append(text_.substr(pos_, length));
      pos_ += length;
    }
    return fail("missing end of string");
  }

  bool parse_array(json& out, size_t depth) {
    pos_++;  // '['
    out = json::array();
    if (peek(']')) {
      pos_++;
      return true;
    }
    for (;;) {
      json element;
      if (!parse_value(element, depth)) return false;
      out.push_back(std::move(element));
      if (peek(',')) {
        pos_++;
      } else if (peek(']')) {
        pos_++;
        return true;
      } else {
        return fail("expected separator in list");
      }
    }
  }

  bool parse_object(json& out, size_t depth) {
    pos_++;  // '{'
    out = json::object();
    if (peek('}')) {
      pos_++;
      return true;
    }
    for (;;) {
      skip_space();
      if (pos_ >= text_.size()) return fail("expecting value");
      if (text_[pos_] != '"' && text_[pos_] != '\'') {
        if (text_[pos_] == '}' || text_[pos_] == ',' || text_[pos_] == ']') {
          return fail("expecting value");
        }
        return fail("key is not a string in object");
      }
      std::string key;
      if (!parse_string(key)) return false;
      if (!peek(':')) return fail("missing : in object pair");
      pos_++;
      json value;
      if (!parse_value(value, depth)) return false;
      if (out.contains(key)) return fail("duplicate key");
      out[key] = std::move(value);
      if (peek(',')) {
        pos_++;
      } else if (peek('}')) {
        pos_++;
        return true;
      } else {
        return fail("expected separator in dict");
      }
    }
  }

  std::string_view text_;
  size_t max_depth_;
  size_t pos_ = 0;
  std::string error_;
  std::string message_;  // storage for a formatted reason
};

}  // namespace

std::optional<nlohmann::json> parse_qmp_json(std::string_view text, std::string* error,
                                             size_t max_depth) {
  Parser parser(text, max_depth);
  return parser.parse_document(error);
}

}  // namespace strata::qmp
