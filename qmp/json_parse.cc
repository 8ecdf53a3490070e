// A recursive-descent JSON parser for QMP's dialect: RFC 8259 plus
// single-quoted strings and the \' escape. It reports QEMU's parse error
// reasons and never throws.
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "qmp/json_stream.h"

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
      keyword_error_ = "invalid keyword '" + std::string(word) + "'";
      return fail(keyword_error_.c_str());
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

  static void put_utf8(std::string& s, uint32_t cp) {
    if (cp < 0x80) {
      s.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      s.push_back(static_cast<char>(0xc0 | (cp >> 6)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    } else if (cp < 0x10000) {
      s.push_back(static_cast<char>(0xe0 | (cp >> 12)));
      s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    } else {
      s.push_back(static_cast<char>(0xf0 | (cp >> 18)));
      s.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
      s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    }
  }

  bool parse_hex4(uint32_t* out) {
    if (pos_ + 4 > text_.size()) return false;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
      char c = text_[pos_++];
      v <<= 4;
      if (c >= '0' && c <= '9') {
        v |= c - '0';
      } else if (c >= 'a' && c <= 'f') {
        v |= c - 'a' + 10;
      } else if (c >= 'A' && c <= 'F') {
        v |= c - 'A' + 10;
      } else {
        return false;
      }
    }
    *out = v;
    return true;
  }

  bool parse_unicode_escape(std::string& s) {
    uint32_t cp = 0;
    if (!parse_hex4(&cp)) return fail("invalid escape sequence in string");
    if (cp >= 0xd800 && cp < 0xdc00) {
      uint32_t low = 0;
      if (pos_ + 2 > text_.size() || text_[pos_] != '\\' || text_[pos_ + 1] != 'u') {
        return fail("missing second half of surrogate pair");
      }
      pos_ += 2;
      if (!parse_hex4(&low) || low < 0xdc00 || low > 0xdfff) {
        return fail("missing second half of surrogate pair");
      }
      cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
    } else if (cp >= 0xdc00 && cp <= 0xdfff) {
      return fail("stray second half of surrogate pair");
    } else if (cp == 0) {
      return fail("\\u0000 is not supported");
    }
    put_utf8(s, cp);
    return true;
  }

  bool parse_escape(std::string& s) {
    if (pos_ >= text_.size()) return fail("invalid escape sequence in string");
    char c = text_[pos_++];
    switch (c) {
      case '"':
        s.push_back('"');
        return true;
      case '\'':
        s.push_back('\'');
        return true;
      case '\\':
        s.push_back('\\');
        return true;
      case '/':
        s.push_back('/');
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
        return parse_unicode_escape(s);
      default:
        return fail("invalid escape sequence in string");
    }
  }

  bool parse_string(std::string& s) {
    char quote = text_[pos_++];
    while (pos_ < text_.size()) {
      char c = text_[pos_++];
      if (c == quote) return true;
      if (c == '\\') {
        if (!parse_escape(s)) return false;
      } else if (static_cast<unsigned char>(c) < 0x20) {
        return fail("control character in string");
      } else {
        s.push_back(c);
      }
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
  std::string keyword_error_;
};

}  // namespace

std::optional<nlohmann::json> parse_qmp_json(std::string_view text, std::string* error,
                                             size_t max_depth) {
  Parser parser(text, max_depth);
  return parser.parse_document(error);
}

}  // namespace strata::qmp
