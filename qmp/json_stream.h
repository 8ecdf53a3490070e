// JsonStreamReader: splits a byte stream into JSON values and parses each one
// with QMP's dialect (single-quoted strings and the \' escape are accepted).
//
// Contract: feed() takes any slice of the stream (a request split across
// reads, several requests in one read, garbage) and appends one Message per
// complete top-level value or per error, exactly where QEMU 7.2's JSON
// lexer and streamer would: the stream is cut into tokens (strings hold no
// control character and no byte 0xFE/0xFF; numbers, [a-z]+ keywords and
// the six structural characters), a value is complete when its brackets
// balance (or a closing one has nothing open), and a lexical error reports
// "stray '<token so far>'", drops the unfinished value and skips input until
// a structural character, a control character or 0xFE/0xFF. The next
// well-formed value then parses normally. Memory is bounded: a value longer
// than `max_message_bytes` or nested deeper than `max_depth` is reported as
// an error and its remaining bytes are skipped without being stored.
// Thread rules: a plain object; use it from one thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace strata::qmp {

struct JsonMessage {
  std::optional<nlohmann::json> value;  // set on success
  std::string error;                    // QEMU-style "JSON parse error, ..." text otherwise
};

struct JsonLimits {
  size_t max_message_bytes = 8 << 20;
  size_t max_depth = 1024;
};

// Parses one complete JSON text in QMP's dialect. On failure returns
// nullopt and sets `error` to the reason ("expecting value", ...).
std::optional<nlohmann::json> parse_qmp_json(std::string_view text, std::string* error,
                                             size_t max_depth = 1024);

class JsonStreamReader {
 public:
  explicit JsonStreamReader(JsonLimits limits = {}) : limits_(limits) {}

  // Consumes `data`; appends the values (or errors) it completes to `out`.
  void feed(std::string_view data, std::vector<JsonMessage>* out);
  // Bytes of an unfinished value currently held.
  size_t pending_bytes() const { return value_.size() + token_.size(); }
  // Memory held for input (what pending_bytes() counts, plus spare capacity).
  size_t capacity_bytes() const { return value_.capacity() + token_.capacity(); }

 private:
  // Lexer states, named after what has been read of the current token.
  enum class Lex : uint8_t {
    kStart,         // between tokens
    kRecovery,      // after an error: skipping to a resynchronisation point
    kString,        // inside a string
    kStringEscape,  // after a backslash inside a string
    kZero,          // "0" or "-0"
    kSign,          // "-"
    kDigits,        // an integer part other than 0
    kPoint,         // a decimal point, no digit after it yet
    kFraction,      // digits after the point
    kExponentMark,  // "e" / "E"
    kExponentSign,  // "e+" / "e-"
    kExponent,      // exponent digits
    kKeyword,       // [a-z]+
  };
  enum class Token : uint8_t { kOpenBrace, kCloseBrace, kOpenBracket, kCloseBracket, kOther };

  bool step(uint8_t c, std::vector<JsonMessage>* out);
  bool start(uint8_t c, std::vector<JsonMessage>* out);
  bool in_string(uint8_t c, std::vector<JsonMessage>* out);
  bool in_number(uint8_t c, std::vector<JsonMessage>* out);
  bool digits_then(uint8_t c, Lex next_if_digit, std::vector<JsonMessage>* out);
  void take(uint8_t c, std::vector<JsonMessage>* out);
  bool end_token(Token t, std::vector<JsonMessage>* out);
  bool lexical_error(uint8_t c, std::vector<JsonMessage>* out);
  void finish_value(std::vector<JsonMessage>* out);
  void skip_value(std::string reason, std::vector<JsonMessage>* out);
  void drop_value();
  static void fail(std::string reason, std::vector<JsonMessage>* out);

  JsonLimits limits_;
  Lex lex_ = Lex::kStart;
  char quote_ = 0;         // inside a string: its quote character
  std::string token_;      // the current token's bytes
  std::string value_;      // the tokens of the unfinished value, space separated
  int64_t braces_ = 0;     // unclosed { of the unfinished value (may go negative)
  int64_t brackets_ = 0;   // unclosed [ of the unfinished value (may go negative)
  bool skipping_ = false;  // too large or deep: tokens are counted, not kept
};

}  // namespace strata::qmp
