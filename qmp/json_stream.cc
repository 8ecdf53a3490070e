// Framing of the QMP byte stream into top-level JSON values: a lexer with
// QEMU 7.2's token rules and error recovery, and a streamer that counts
// brackets to find where each value ends.
#include "qmp/json_stream.h"

namespace strata::qmp {

namespace {

bool is_digit(uint8_t c) {
  return c >= '0' && c <= '9';
}

// Where the lexer resumes after an error: a structural character, a control
// character other than tab, or a byte that never occurs in UTF-8.
bool is_resync_point(uint8_t c) {
  if (c == '\t') return false;
  if (c < 0x20 || c >= 0xfe) return true;
  return c == '[' || c == ']' || c == '{' || c == '}' || c == ':' || c == ',';
}

// Large buffers are given back once their value is done; small ones are
// kept for the next request.
void release(std::string& s) {
  s.clear();
  if (s.capacity() > 4096) s.shrink_to_fit();
}

}  // namespace

void JsonStreamReader::feed(std::string_view data, std::vector<JsonMessage>* out) {
  for (char ch : data) {
    auto c = static_cast<uint8_t>(ch);
    while (!step(c, out)) {
    }
  }
}

// Returns true once `c` is consumed, false to look at it again in the
// state the lexer moved to (a token that ends at `c` without taking it).
bool JsonStreamReader::step(uint8_t c, std::vector<JsonMessage>* out) {
  switch (lex_) {
    case Lex::kStart:
      return start(c, out);
    case Lex::kRecovery:
      if (!is_resync_point(c)) return true;
      lex_ = Lex::kStart;
      return false;
    case Lex::kString:
    case Lex::kStringEscape:
      return in_string(c, out);
    case Lex::kKeyword:
      if (c < 'a' || c > 'z') return end_token(Token::kOther, out);
      take(c, out);
      return true;
    default:
      return in_number(c, out);
  }
}

bool JsonStreamReader::start(uint8_t c, std::vector<JsonMessage>* out) {
  Token structural = Token::kOther;
  switch (c) {
    case ' ':
    case '\t':
    case '\r':
    case '\n':
      return true;
    case '{':
      structural = Token::kOpenBrace;
      break;
    case '}':
      structural = Token::kCloseBrace;
      break;
    case '[':
      structural = Token::kOpenBracket;
      break;
    case ']':
      structural = Token::kCloseBracket;
      break;
    case ',':
    case ':':
      break;
    case '"':
    case '\'':
      quote_ = static_cast<char>(c);
      lex_ = Lex::kString;
      take(c, out);
      return true;
    case '-':
      lex_ = Lex::kSign;
      take(c, out);
      return true;
    case '0':
      lex_ = Lex::kZero;
      take(c, out);
      return true;
    default:
      if (is_digit(c)) {
        lex_ = Lex::kDigits;
      } else if (c >= 'a' && c <= 'z') {
        lex_ = Lex::kKeyword;
      } else {
        return lexical_error(c, out);
      }
      take(c, out);
      return true;
  }
  take(c, out);
  end_token(structural, out);
  return true;
}

bool JsonStreamReader::in_string(uint8_t c, std::vector<JsonMessage>* out) {
  // Validating UTF-8 is the parser's job; the lexer refuses only these.
  if (c < 0x20 || c >= 0xfe) return lexical_error(c, out);
  take(c, out);
  if (lex_ == Lex::kStringEscape) {
    lex_ = Lex::kString;
  } else if (c == '\\') {
    lex_ = Lex::kStringEscape;
  } else if (c == static_cast<uint8_t>(quote_)) {
    end_token(Token::kOther, out);
  }
  return true;
}

// A digit moves to `next_if_digit`; anything else is an error.
bool JsonStreamReader::digits_then(uint8_t c, Lex next_if_digit, std::vector<JsonMessage>* out) {
  if (!is_digit(c)) return lexical_error(c, out);
  lex_ = next_if_digit;
  take(c, out);
  return true;
}

bool JsonStreamReader::in_number(uint8_t c, std::vector<JsonMessage>* out) {
  bool exponent_mark = c == 'e' || c == 'E';
  Lex next = lex_;
  switch (lex_) {
    case Lex::kSign:
      if (c == '0') {
        next = Lex::kZero;
        break;
      }
      return digits_then(c, Lex::kDigits, out);
    case Lex::kZero:
      if (is_digit(c)) return lexical_error(c, out);
      if (c != '.') return end_token(Token::kOther, out);
      next = Lex::kPoint;
      break;
    case Lex::kDigits:
    case Lex::kFraction:
      if (exponent_mark) {
        next = Lex::kExponentMark;
      } else if (c == '.' && lex_ == Lex::kDigits) {
        next = Lex::kPoint;
      } else if (!is_digit(c)) {
        return end_token(Token::kOther, out);
      }
      break;
    case Lex::kPoint:
      return digits_then(c, Lex::kFraction, out);
    case Lex::kExponentMark:
      if (c == '+' || c == '-') {
        next = Lex::kExponentSign;
        break;
      }
      return digits_then(c, Lex::kExponent, out);
    case Lex::kExponentSign:
      return digits_then(c, Lex::kExponent, out);
    case Lex::kExponent:
      if (!is_digit(c)) return end_token(Token::kOther, out);
      break;
    default:
      break;
  }
  lex_ = next;
  take(c, out);
  return true;
}

void JsonStreamReader::take(uint8_t c, std::vector<JsonMessage>* out) {
  if (!skipping_ && value_.size() + token_.size() >= limits_.max_message_bytes) {
    skip_value("message too large (limit " + std::to_string(limits_.max_message_bytes) + " bytes)",
               out);
  }
  // While skipping, a token is kept only as far as an error message needs.
  if (token_.size() < limits_.max_message_bytes) token_.push_back(static_cast<char>(c));
}

// Ends the current token (its bytes are in token_). Returns false: the byte
// that ended a number or keyword is looked at again from kStart.
bool JsonStreamReader::end_token(Token t, std::vector<JsonMessage>* out) {
  lex_ = Lex::kStart;
  braces_ += t == Token::kOpenBrace ? 1 : t == Token::kCloseBrace ? -1 : 0;
  brackets_ += t == Token::kOpenBracket ? 1 : t == Token::kCloseBracket ? -1 : 0;
  if (!skipping_) {
    value_ += token_;
    value_.push_back(' ');
  }
  release(token_);
  if (!skipping_ && braces_ + brackets_ > static_cast<int64_t>(limits_.max_depth)) {
    skip_value("nesting too deep (limit " + std::to_string(limits_.max_depth) + ")", out);
  }
  bool open = (braces_ > 0 || brackets_ > 0) && braces_ >= 0 && brackets_ >= 0;
  if (!open) finish_value(out);
  return false;
}

bool JsonStreamReader::lexical_error(uint8_t c, std::vector<JsonMessage>* out) {
  token_.push_back(static_cast<char>(c));
  // QEMU formats the token as a C string: it ends at a zero byte.
  fail("stray '" + token_.substr(0, token_.find('\0')) + "'", out);
  release(token_);
  drop_value();
  lex_ = Lex::kRecovery;
  return true;
}

void JsonStreamReader::finish_value(std::vector<JsonMessage>* out) {
  if (!skipping_) {
    std::string error;
    auto value = parse_qmp_json(value_, &error, limits_.max_depth);
    if (value) {
      out->push_back(JsonMessage{std::move(value), {}});
    } else {
      fail(error, out);
    }
  }
  drop_value();
}

void JsonStreamReader::skip_value(std::string reason, std::vector<JsonMessage>* out) {
  fail(std::move(reason), out);
  skipping_ = true;
  release(value_);
  value_.shrink_to_fit();
  token_.clear();
  token_.shrink_to_fit();
}

void JsonStreamReader::drop_value() {
  release(value_);
  braces_ = 0;
  brackets_ = 0;
  skipping_ = false;
}

void JsonStreamReader::fail(std::string reason, std::vector<JsonMessage>* out) {
  out->push_back(JsonMessage{std::nullopt, "JSON parse error, " + std::move(reason)});
}

}  // namespace strata::qmp
