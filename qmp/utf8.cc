// Modified UTF-8 decoding and encoding with QEMU's validity rules.
#include "qmp/utf8.h"

namespace strata::qmp {

namespace {

// Number of bytes announced by a lead byte (its leading one bits), 0 for a
// continuation byte, -1 for 0xFE and 0xFF.
int announced_length(uint8_t lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xfe) return -1;
  int n = 0;
  for (uint8_t mask = 0x80; lead & mask; mask >>= 1) n++;
  return n == 1 ? 0 : n;
}

// The smallest code point a sequence of `n` bytes may encode.
int64_t shortest_form_minimum(int n) {
  static constexpr int64_t kMin[] = {0, 0, 0x80, 0x800, 0x10000, 0x200000, 0x4000000};
  return kMin[n];
}

}  // namespace

bool is_valid_code_point(int64_t cp) {
  if (cp < 0 || cp > 0x10ffff) return false;
  if (cp >= 0xfdd0 && cp <= 0xfdef) return false;
  if ((cp & 0xfffe) == 0xfffe) return false;
  return cp < 0xd800 || cp > 0xdfff;
}

int32_t decode_mod_utf8(std::string_view s, size_t* length) {
  *length = 0;
  if (s.empty()) return -1;
  auto lead = static_cast<uint8_t>(s[0]);
  int n = announced_length(lead);
  *length = 1;
  if (n == 1) return lead;
  if (n <= 0) return -1;
  int64_t cp = lead & (0x7f >> n);
  for (int i = 1; i < n; i++) {
    if (static_cast<size_t>(i) >= s.size()) return -1;
    auto b = static_cast<uint8_t>(s[i]);
    if ((b & 0xc0) != 0x80) return -1;
    cp = (cp << 6) | (b & 0x3f);
    *length = i + 1;
  }
  bool null_pair = cp == 0 && n == 2;
  if (!is_valid_code_point(cp)) return -1;
  if (cp < shortest_form_minimum(n) && !null_pair) return -1;
  return static_cast<int32_t>(cp);
}

bool append_mod_utf8(std::string* out, int64_t cp) {
  if (!is_valid_code_point(cp)) return false;
  auto put = [out](int64_t byte) { out->push_back(static_cast<char>(byte)); };
  if (cp > 0 && cp < 0x80) {
    put(cp);
  } else if (cp < 0x800) {
    put(0xc0 | (cp >> 6));
    put(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    put(0xe0 | (cp >> 12));
    put(0x80 | ((cp >> 6) & 0x3f));
    put(0x80 | (cp & 0x3f));
  } else {
    put(0xf0 | (cp >> 18));
    put(0x80 | ((cp >> 12) & 0x3f));
    put(0x80 | ((cp >> 6) & 0x3f));
    put(0x80 | (cp & 0x3f));
  }
  return true;
}

}  // namespace strata::qmp
