#include "strata_io/report.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace strata::io {

namespace {

// Powers of 1024 for qemu_strtosz's suffixes; 0 for none.
int64_t suffix_mul(char c) {
  static const char kSuffixes[] = "bkmgtpe";
  const char* p = c ? std::strchr(kSuffixes, std::tolower(static_cast<unsigned char>(c))) : nullptr;
  return p ? int64_t{1} << (10 * (p - kSuffixes)) : 0;
}

// The fraction after `text[pos]` == '.', in [0, 1); -1 if malformed or an
// exponent follows (qemu_strtosz refuses those).
double parse_fraction(const std::string& text, size_t* pos) {
  size_t end = *pos + 1;
  while (end < text.size() && std::isdigit(static_cast<unsigned char>(text[end]))) end++;
  std::string digits = "0" + text.substr(*pos, end - *pos);
  *pos = end;
  return std::strtod(digits.c_str(), nullptr);
}

double elapsed_seconds(uint64_t ns) {
  return double(ns) / 1e9;
}

}  // namespace

int64_t cvtnum(const std::string& text) {
  const char* s = text.c_str();
  if (text.empty() || std::strchr(s, '-') || std::isspace(static_cast<unsigned char>(s[0]))) {
    return -EINVAL;
  }
  bool hex = text.size() > 1 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X');
  char* end = nullptr;
  errno = 0;
  uint64_t value = std::strtoull(s, &end, hex ? 16 : 10);
  if (errno == ERANGE) return -ERANGE;
  if (end == s || (hex && end == s + 2)) return -EINVAL;
  size_t pos = end - s;
  double fraction = 0;
  if (!hex && pos < text.size() && text[pos] == '.') fraction = parse_fraction(text, &pos);
  int64_t mul = pos < text.size() ? suffix_mul(text[pos]) : 0;
  if (mul) pos++;
  if (pos != text.size() || (hex && (mul || fraction)) || (fraction && mul <= 1)) return -EINVAL;
  if (!mul) mul = 1;
  uint64_t scaled = value * uint64_t(mul);
  if (value && scaled / uint64_t(mul) != value) return -ERANGE;
  scaled += uint64_t(std::floor(fraction * double(mul) + 0.5));
  if (scaled > uint64_t(INT64_MAX)) return -ERANGE;
  return int64_t(scaled);
}

void print_cvtnum_err(int64_t rc, const std::string& arg) {
  if (rc == -EINVAL) {
    std::printf("Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- %s\n",
                arg.c_str());
  } else if (rc == -ERANGE) {
    std::printf("Parsing error: argument too large -- %s\n", arg.c_str());
  } else {
    std::printf("Parsing error: %s\n", arg.c_str());
  }
}

int parse_pattern(const std::string& arg) {
  char* end = nullptr;
  long pattern = std::strtol(arg.c_str(), &end, 0);
  if (pattern < 0 || pattern > 255 || *end != '\0') {
    std::printf("%s is not a valid pattern byte\n", arg.c_str());
    return -1;
  }
  return int(pattern);
}

std::string cvtstr(double value) {
  static const char* kUnits[] = {" KiB", " MiB", " GiB", " TiB", " PiB", " EiB"};
  char buf[64];
  const char* suffix = " bytes";
  int unit = 0;
  while (unit < 6 && value >= std::ldexp(1.0, 10 * (unit + 1))) unit++;
  if (unit) {
    suffix = kUnits[unit - 1];
    std::snprintf(buf, sizeof buf, "%.3f", value / std::ldexp(1.0, 10 * unit));
  } else {
    std::snprintf(buf, sizeof buf, "%f", value);
  }
  std::string out = buf;
  size_t trim = out.find(".000");
  if (trim != std::string::npos) out.resize(trim);
  return out + suffix;
}

std::string timestr(uint64_t ns, bool verbose) {
  uint64_t sec = ns / 1000000000;
  double seconds = double(sec % 60) + double(ns % 1000000000) / 1e9;
  char buf[64];
  if (verbose || sec) {
    std::snprintf(buf, sizeof buf, "%u:%02u:%05.2f", unsigned(sec / 3600), unsigned(sec / 60 % 60),
                  seconds);
  } else {
    std::snprintf(buf, sizeof buf, "%05.2f sec", seconds);
  }
  return buf;
}

void print_report(const char* op, uint64_t ns, int64_t offset, int64_t count, int64_t total,
                  int ops, bool machine) {
  double secs = elapsed_seconds(ns);
  std::string ts = timestr(ns, machine);
  if (machine) {
    std::printf("%lld,%d,%s,%.3f,%.3f\n", (long long)total, ops, ts.c_str(), double(total) / secs,
                double(ops) / secs);
    return;
  }
  std::printf("%s %lld/%lld bytes at offset %lld\n", op, (long long)total, (long long)count,
              (long long)offset);
  std::printf("%s, %d ops; %s (%s/sec and %.4f ops/sec)\n", cvtstr(double(total)).c_str(), ops,
              ts.c_str(), cvtstr(double(total) / secs).c_str(), double(ops) / secs);
}

void dump_buffer(const uint8_t* buf, int64_t offset, int64_t len) {
  for (int64_t i = 0; i < len; i += 16) {
    std::printf("%08llx:  ", (unsigned long long)(offset + i));
    int64_t n = std::min<int64_t>(16, len - i);
    for (int64_t j = 0; j < n; j++) std::printf("%02x ", buf[i + j]);
    std::printf(" ");
    for (int64_t j = 0; j < n; j++) {
      std::putchar(std::isalnum(buf[i + j]) ? buf[i + j] : '.');
    }
    std::printf("\n");
  }
}

}  // namespace strata::io
