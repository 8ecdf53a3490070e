// JsonStreamReader: splits a byte stream into JSON values and parses each one
// with QMP's dialect (single-quoted strings and the \' escape are accepted).
//
// Contract: feed() takes any slice of the stream (a request split across
// reads, several requests in one read, garbage) and appends one Message per
// complete top-level value or per error. A lexical error (a stray control
// character, an invalid keyword, a closing bracket with nothing open) or a
// parse error is reported once and the reader resynchronises, so the next
// well-formed value parses normally. Memory is bounded: a value longer than
// `max_message_bytes` or nested deeper than `max_depth` is reported as an
// error and its remaining bytes are skipped without being stored.
// Thread rules: a plain object; use it from one thread.
#pragma once

#include <cstddef>
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
  size_t pending_bytes() const { return buffer_.size(); }

 private:
  enum class Mode { kIdle, kStructure, kString, kWord };
  void feed_char(char c, std::vector<JsonMessage>* out);
  void idle_char(char c, std::vector<JsonMessage>* out);
  void structure_char(char c, std::vector<JsonMessage>* out);
  void string_char(char c, std::vector<JsonMessage>* out);
  void word_char(char c, std::vector<JsonMessage>* out);
  void append(char c, std::vector<JsonMessage>* out);
  void finish(std::vector<JsonMessage>* out);
  void fail(std::string reason, std::vector<JsonMessage>* out);
  void reset();

  JsonLimits limits_;
  Mode mode_ = Mode::kIdle;
  std::string buffer_;
  size_t depth_ = 0;
  char quote_ = 0;           // inside a string: its quote character
  bool escape_ = false;      // inside a string: after a backslash
  bool top_string_ = false;  // the string is the whole top-level value
  bool overflowed_ = false;  // too large: skip until the value ends
};

// True for bytes QEMU's lexer rejects outside strings (control characters
// other than tab, CR and LF, and 0xFF / 0xFE which can never start UTF-8).
bool is_stray_byte(unsigned char c);

}  // namespace strata::qmp
