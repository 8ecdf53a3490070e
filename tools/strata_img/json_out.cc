#include "strata_img/json_out.h"

#include <cinttypes>
#include <cstdio>

namespace strata::img {

namespace {

using ojson = nlohmann::ordered_json;

// The code point of the UTF-8 sequence at s[*i] (advancing *i past it), or
// -1 for an invalid, overlong or surrogate sequence (one byte consumed).
int32_t next_code_point(const std::string& s, size_t* i) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = byte(*i);
  int len = c < 0x80             ? 1
            : (c & 0xE0) == 0xC0 ? 2
            : (c & 0xF0) == 0xE0 ? 3
            : (c & 0xF8) == 0xF0 ? 4
                                 : 0;
  if (len == 0 || *i + len > s.size()) {
    ++*i;
    return -1;
  }
  int32_t cp = len == 1 ? c : c & (0x7F >> len);
  for (int k = 1; k < len; k++) {
    if ((byte(*i + k) & 0xC0) != 0x80) {
      ++*i;
      return -1;
    }
    cp = (cp << 6) | (byte(*i + k) & 0x3F);
  }
  static const int32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
    ++*i;
    return -1;
  }
  *i += len;
  return cp;
}

void quoted(std::string& out, const std::string& s) {
  out += '"';
  char buf[16];
  for (size_t i = 0; i < s.size();) {
    int32_t cp = next_code_point(s, &i);
    switch (cp) {
      case '"':
        out += "\\\"";
        continue;
      case '\\':
        out += "\\\\";
        continue;
      case '\b':
        out += "\\b";
        continue;
      case '\f':
        out += "\\f";
        continue;
      case '\n':
        out += "\\n";
        continue;
      case '\r':
        out += "\\r";
        continue;
      case '\t':
        out += "\\t";
        continue;
      default:
        break;
    }
    if (cp < 0) cp = 0xFFFD;
    if (cp > 0xFFFF) {
      std::snprintf(buf, sizeof buf, "\\u%04X\\u%04X", 0xD800 + ((cp - 0x10000) >> 10),
                    0xDC00 + ((cp - 0x10000) & 0x3FF));
      out += buf;
    } else if (cp < 0x20 || cp >= 0x7F) {
      std::snprintf(buf, sizeof buf, "\\u%04X", unsigned(cp));
      out += buf;
    } else {
      out += char(cp);
    }
  }
  out += '"';
}

void newline(std::string& out, int depth) {
  out += '\n';
  out.append(size_t(depth) * 4, ' ');
}

void write(std::string& out, const ojson& v, int depth) {
  char buf[64];
  switch (v.type()) {
    case ojson::value_t::object: {
      out += '{';
      bool first = true;
      for (auto it = v.begin(); it != v.end(); ++it) {
        if (!first) out += ',';
        first = false;
        newline(out, depth + 1);
        quoted(out, it.key());
        out += ": ";
        write(out, *it, depth + 1);
      }
      newline(out, depth);
      out += '}';
      return;
    }
    case ojson::value_t::array: {
      out += '[';
      bool first = true;
      for (const auto& e : v) {
        if (!first) out += ',';
        first = false;
        newline(out, depth + 1);
        write(out, e, depth + 1);
      }
      newline(out, depth);
      out += ']';
      return;
    }
    case ojson::value_t::string:
      quoted(out, v.get_ref<const std::string&>());
      return;
    case ojson::value_t::boolean:
      out += v.get<bool>() ? "true" : "false";
      return;
    case ojson::value_t::number_integer:
      std::snprintf(buf, sizeof buf, "%" PRId64, v.get<int64_t>());
      out += buf;
      return;
    case ojson::value_t::number_unsigned:
      std::snprintf(buf, sizeof buf, "%" PRIu64, v.get<uint64_t>());
      out += buf;
      return;
    case ojson::value_t::number_float:
      std::snprintf(buf, sizeof buf, "%.17g", v.get<double>());
      out += buf;
      return;
    default:
      out += "null";
      return;
  }
}

}  // namespace

std::string qemu_json_pretty(const ojson& value) {
  std::string out;
  write(out, value, 0);
  return out;
}

}  // namespace strata::img
