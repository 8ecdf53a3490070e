#include "strata_io/io_util.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "block/core/node.h"
#include "strata_io/report.h"
#include "strata_io/session.h"

namespace strata::io {

bool parse_number(const std::string& word, int64_t* out) {
  int64_t v = cvtnum(word);
  if (v < 0) {
    print_cvtnum_err(v, word);
    return false;
  }
  *out = v;
  return true;
}

bool parse_length(const std::string& word, int64_t* out, const char* too_long) {
  if (!parse_number(word, out)) return false;
  if (*out <= kMaxRequestBytes) return true;
  std::printf(too_long, (long long)kMaxRequestBytes, word.c_str());
  return false;
}

bool parse_vector_length(const std::string& word, int64_t sum, int64_t* out) {
  if (!parse_number(word, out)) return false;
  if (*out > kMaxRequestBytes) {
    std::printf("Argument '%s' exceeds maximum size %lld\n", word.c_str(),
                (long long)kMaxRequestBytes);
    return false;
  }
  if (sum > kMaxRequestBytes - *out) {
    std::printf("The total number of bytes exceed the maximum size %lld\n",
                (long long)kMaxRequestBytes);
    return false;
  }
  return true;
}

bool sector_aligned(int64_t offset, int64_t count) {
  if (offset % 512) {
    std::printf("%lld is not a sector-aligned value for 'offset'\n", (long long)offset);
    return false;
  }
  if (count % 512) {
    std::printf("%lld is not a sector-aligned value for 'count'\n", (long long)count);
    return false;
  }
  return true;
}

int report_failure(const char* verb, const Error& error) {
  const char* reason = std::strerror(error.code);
  if (!error.message.empty() && error.message != reason) {
    std::fprintf(stderr, "strata-io: %s\n", error.message.c_str());
  }
  std::printf("%s failed: %s\n", verb, reason);
  return -error.code;
}

bool writable_or_report(Session& s) {
  if (s.drive()->edge()->perm() & kPermWrite) return true;
  std::fprintf(stderr, "strata-io: Block node is read-only\n");
  return false;
}

int inject_invalid(Session& s, bool write) {
  std::printf("injecting invalid %s request\n", write ? "write" : "read");
  BlockStats& stats = s.drive()->edge()->node()->stats();
  (write ? stats.invalid_wr_operations : stats.invalid_rd_operations)++;
  return 0;
}

bool fill_write_buffer(const WriteSpec& w, std::vector<uint8_t>* buf) {
  buf->assign(w.count, uint8_t(w.pattern));
  if (w.source.empty()) return true;
  FILE* f = std::fopen(w.source.c_str(), "r");
  if (!f) {
    std::perror(w.source.c_str());
    return false;
  }
  size_t got = std::fread(buf->data(), 1, buf->size(), f);
  bool failed = std::ferror(f);
  std::fclose(f);
  if (failed) {
    std::fprintf(stderr, "%s: %s\n", w.source.c_str(), std::strerror(EIO));
    return false;
  }
  if (got == 0 && !buf->empty()) {
    std::fprintf(stderr, "%s: file is empty\n", w.source.c_str());
    return false;
  }
  for (size_t i = got; i < buf->size(); i++) (*buf)[i] = (*buf)[i % got];
  return true;
}

namespace {

// QEMU's blk_check_byte_request: a request past the end fails with EIO.
Result<void> check_range(Session& s, int64_t offset, int64_t bytes) {
  uint64_t size = s.drive()->size();
  if (uint64_t(offset) > size || uint64_t(bytes) > size - uint64_t(offset)) {
    return Error{EIO, ""};  // nothing to add to strerror, as QEMU
  }
  return {};
}

}  // namespace

Task<Result<void>> co_checked_read(Session& s, int64_t offset, std::vector<uint8_t>& buf) {
  STRATA_CO_TRY(check_range(s, offset, int64_t(buf.size())));
  co_return co_await s.drive()->co_read(uint64_t(offset), buf);
}

Task<Result<void>> co_checked_write(Session& s, WriteSpec w, const std::vector<uint8_t>& buf) {
  if (w.vmstate) co_return Error{ENOTSUP, ""};
  STRATA_CO_TRY(check_range(s, w.offset, w.count));
  Child* edge = s.drive()->edge();
  uint32_t flags = (w.fua || s.writethrough()) ? uint32_t{kReqFua} : 0;
  if (w.zeroes) {
    flags |=
        (w.unmap ? uint32_t{kReqMayUnmap} : 0) | (w.no_fallback ? uint32_t{kReqNoFallback} : 0);
    co_return co_await edge->co_pwrite_zeroes(uint64_t(w.offset), uint64_t(w.count), flags);
  }
  if (w.compressed) flags = kReqWriteCompressed;
  co_return co_await edge->co_pwrite(uint64_t(w.offset), buf, flags);
}

const char* const kReadHelp =
    "\n"
    " reads a range of bytes from the given offset\n"
    "\n"
    " Example:\n"
    " 'read -v 512 1k' - dumps 1 kilobyte read from 512 bytes into the file\n"
    "\n"
    " -b, -- read from the VM state (not supported by strata-io: fails)\n"
    " -C, -- report statistics in a machine parsable format\n"
    " -l, -- length for pattern verification (only with -P)\n"
    " -p, -- ignored, as by qemu-io\n"
    " -P, -- use a pattern to verify read data\n"
    " -q, -- quiet mode, do not show I/O statistics\n"
    " -s, -- start offset for pattern verification (only with -P)\n"
    " -v, -- dump buffer to standard output\n"
    "\n";

const char* const kReadvHelp =
    "\n"
    " reads a range of bytes from the given offset into multiple buffers\n"
    "\n"
    " Example:\n"
    " 'readv -v 512 1k 1k ' - dumps 2 kilobytes read from 512 bytes into the file\n"
    "\n"
    " -C, -- report statistics in a machine parsable format\n"
    " -P, -- use a pattern to verify read data\n"
    " -v, -- dump buffer to standard output\n"
    " -q, -- quiet mode, do not show I/O statistics\n"
    "\n";

const char* const kAioReadHelp =
    "\n"
    " asynchronously reads a range of bytes from the given offset\n"
    "\n"
    " The read runs in the background: aio_flush waits for it. The command\n"
    " succeeds once the request is submitted, whatever its outcome.\n"
    " -C, -- report statistics in a machine parsable format\n"
    " -P, -- use a pattern to verify read data\n"
    " -i, -- treat request as invalid, for exercising stats\n"
    " -v, -- dump buffer to standard output\n"
    " -q, -- quiet mode, do not show I/O statistics\n"
    "\n";

const char* const kWriteHelp =
    "\n"
    " writes a range of bytes from the given offset\n"
    "\n"
    " Example:\n"
    " 'write 512 1k' - writes 1 kilobyte at 512 bytes into the open file\n"
    "\n"
    " The buffer is filled with a set pattern (0xcdcdcdcd) unless -P or -s.\n"
    " -b, -- write to the VM state (not supported by strata-io: fails)\n"
    " -c, -- write compressed data (whole clusters of formats that compress)\n"
    " -f, -- use Force Unit Access semantics\n"
    " -n, -- with -z, don't allow slow fallback\n"
    " -p, -- ignored, as by qemu-io\n"
    " -P, -- use different pattern to fill file\n"
    " -s, -- use a pattern file to fill the write buffer\n"
    " -C, -- report statistics in a machine parsable format\n"
    " -q, -- quiet mode, do not show I/O statistics\n"
    " -u, -- with -z, allow unmapping\n"
    " -z, -- write zeroes\n"
    "\n";

const char* const kWritevHelp =
    "\n"
    " writes a range of bytes from the given offset source from multiple buffers\n"
    "\n"
    " Example:\n"
    " 'writev 512 1k 1k' - writes 2 kilobytes at 512 bytes into the open file\n"
    "\n"
    " -P, -- use different pattern to fill file\n"
    " -C, -- report statistics in a machine parsable format\n"
    " -f, -- use Force Unit Access semantics\n"
    " -q, -- quiet mode, do not show I/O statistics\n"
    "\n";

const char* const kAioWriteHelp =
    "\n"
    " asynchronously writes a range of bytes from the given offset source\n"
    " from multiple buffers\n"
    "\n"
    " The write runs in the background: aio_flush waits for it. The command\n"
    " succeeds once the request is submitted, whatever its outcome.\n"
    " -P, -- use different pattern to fill file\n"
    " -C, -- report statistics in a machine parsable format\n"
    " -f, -- use Force Unit Access semantics\n"
    " -i, -- treat request as invalid, for exercising stats\n"
    " -q, -- quiet mode, do not show I/O statistics\n"
    " -u, -- with -z, allow unmapping\n"
    " -z, -- write zeroes\n"
    "\n";

const char* const kDiscardHelp =
    "\n"
    " discards a range of bytes from the given offset\n"
    "\n"
    " Example:\n"
    " 'discard 512 1k' - discards 1 kilobyte from 512 bytes into the file\n"
    "\n"
    " -C, -- report statistics in a machine parsable format\n"
    " -q, -- quiet mode, do not show I/O statistics\n"
    "\n";

}  // namespace strata::io
