// qemu-io's number parsing and output formats, shared by strata-io's
// commands: sizes with suffixes, pattern bytes, "64 KiB", the two report
// lines ("read 512/512 bytes at offset 0" and the timing line, or one
// comma-separated line with -C) and the -v hex dump.
// Thread rules: pure functions writing to stdout.
#pragma once

#include <cstdint>
#include <string>

namespace strata::io {

// The largest request qemu-io sends (QEMU's BDRV_REQUEST_MAX_BYTES).
constexpr int64_t kMaxRequestBytes = 2147483136;

// qemu_strtosz: a decimal or 0x number, an optional fraction, an optional
// suffix B/K/M/G/T/P/E (either case, powers of 1024). Returns the value or
// -EINVAL / -ERANGE.
int64_t cvtnum(const std::string& text);
// "Parsing error: ..." for a cvtnum() failure.
void print_cvtnum_err(int64_t rc, const std::string& arg);
// A pattern byte (strtol base 0, 0 to 255), or -1 after qemu-io's message.
int parse_pattern(const std::string& arg);

// "512 bytes", "64 KiB", "1.500 MiB".
std::string cvtstr(double value);
// "00.00 sec" (or "H:MM:SS.ss" past a second, or always with `verbose`).
std::string timestr(uint64_t ns, bool verbose);
// The report of a finished request of `count` bytes, `total` done.
void print_report(const char* op, uint64_t ns, int64_t offset, int64_t count, int64_t total,
                  int ops, bool machine);
// The -v dump: "00000000:  cd cd ...  ................".
void dump_buffer(const uint8_t* buf, int64_t offset, int64_t len);

}  // namespace strata::io
