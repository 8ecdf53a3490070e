// Pieces shared by strata-io's I/O commands: the parsed form of a read or a
// write, argument checks with qemu-io's messages, requests checked the way
// QEMU's block backend checks them (out of range: EIO), and help texts.
// Thread rules: loop-thread only.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "strata/result.h"
#include "strata/task.h"

namespace strata::io {

class Session;

struct ReadSpec {
  int64_t offset = 0;
  int64_t count = 0;
  int pattern = -1;            // -P: verify; -1 none
  int64_t pattern_offset = 0;  // -s
  int64_t pattern_count = 0;   // -l
  bool has_pattern_offset = false;
  bool has_pattern_count = false;
  bool machine = false;  // -C
  bool quiet = false;    // -q
  bool verbose = false;  // -v
  bool vmstate = false;  // -b (not supported: the read fails)
};

struct WriteSpec {
  int64_t offset = 0;
  int64_t count = 0;
  int pattern = 0xcd;
  bool pattern_given = false;
  std::string source;  // -s: file whose bytes fill the buffer
  bool machine = false;
  bool quiet = false;
  bool zeroes = false;       // -z
  bool unmap = false;        // -u
  bool no_fallback = false;  // -n
  bool fua = false;          // -f
  bool compressed = false;   // -c
  bool vmstate = false;      // -b (not supported: the write fails)
};

// cvtnum() with its error message.
bool parse_number(const std::string& word, int64_t* out);
// A request length: a number no larger than kMaxRequestBytes; `too_long`
// is the printf format of the refusal (%lld limit, %s word).
bool parse_length(const std::string& word, int64_t* out, const char* too_long);
// One length of readv/writev/aio_*, added to `sum` so far.
bool parse_vector_length(const std::string& word, int64_t sum, int64_t* out);
// -b and -c need 512-byte aligned offsets and lengths.
bool sector_aligned(int64_t offset, int64_t count);

// "VERB failed: strerror" on stdout; returns -code. A block layer message
// that says more than strerror goes to stderr first, as qemu-io's drivers
// report such events (qcow2's "Marking image as corrupt: ...").
int report_failure(const char* verb, const Error& error);
// A write on an image opened read-only fails as qemu-io's does.
bool writable_or_report(Session& s);
// aio_read -i / aio_write -i: counts an invalid request in the statistics.
int inject_invalid(Session& s, bool write);
// The write buffer: the pattern, or the -s file's bytes repeated.
bool fill_write_buffer(const WriteSpec& w, std::vector<uint8_t>* buf);

Task<Result<void>> co_checked_read(Session& s, int64_t offset, std::vector<uint8_t>& buf);
Task<Result<void>> co_checked_write(Session& s, WriteSpec w, const std::vector<uint8_t>& buf);

extern const char* const kReadHelp;
extern const char* const kReadvHelp;
extern const char* const kAioReadHelp;
extern const char* const kWriteHelp;
extern const char* const kWritevHelp;
extern const char* const kAioWriteHelp;
extern const char* const kDiscardHelp;

}  // namespace strata::io
