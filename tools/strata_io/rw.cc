// strata-io's read and write commands: read, readv, write, writev and their
// asynchronous forms aio_read, aio_write, with qemu-io's flags, checks,
// messages and reports.
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "block/core/node.h"
#include "strata_io/getopt.h"
#include "strata_io/io_util.h"
#include "strata_io/report.h"
#include "strata_io/session.h"

namespace strata::io {

namespace {

const Command& cmd(const char* name) {
  return *find_command(name);
}

// -P pattern verification of `len` bytes of `buf` at `at`.
int verify(const uint8_t* buf, int64_t len, int pattern, int64_t at) {
  for (int64_t i = 0; i < len; i++) {
    if (buf[i] != pattern) {
      std::printf("Pattern verification failed at offset %lld, %lld bytes\n", (long long)at,
                  (long long)len);
      return -EINVAL;
    }
  }
  return 0;
}

// What read, readv and aio_read print once their data is in.
int finish_read(const ReadSpec& r, const std::vector<uint8_t>& buf, uint64_t ns) {
  int ret = 0;
  if (r.pattern >= 0) {
    ret = verify(buf.data() + r.pattern_offset, r.pattern_count, r.pattern,
                 r.offset + r.pattern_offset);
  }
  if (r.quiet) return ret;
  if (r.verbose) dump_buffer(buf.data(), r.offset, int64_t(buf.size()));
  print_report("read", ns, r.offset, int64_t(buf.size()), int64_t(buf.size()), 1, r.machine);
  return ret;
}

Task<int> co_do_read(Session& s, ReadSpec r, const char* verb) {
  std::vector<uint8_t> buf(r.count, 0xab);
  uint64_t t0 = Loop::now_ns();
  Result<void> res;
  if (r.vmstate) {
    res = Error{ENOTSUP, ""};
  } else {
    res = co_await co_checked_read(s, r.offset, buf);
  }
  uint64_t ns = Loop::now_ns() - t0;
  if (!res) co_return report_failure(verb, res.error());
  co_return finish_read(r, buf, ns);
}

// One flag of read, readv or aio_read (each passes the ones it takes).
int parse_read_flag(int c, const Getopt& g, ReadSpec* r, const char* command) {
  switch (c) {
    case 'b':
      r->vmstate = true;
      return 0;
    case 'C':
      r->machine = true;
      return 0;
    case 'p':
      return 0;  // ignored, as by qemu-io
    case 'q':
      r->quiet = true;
      return 0;
    case 'v':
      r->verbose = true;
      return 0;
    case 'l':
      r->has_pattern_count = true;
      return parse_number(g.arg(), &r->pattern_count) ? 0 : -EINVAL;
    case 's':
      r->has_pattern_offset = true;
      return parse_number(g.arg(), &r->pattern_offset) ? 0 : -EINVAL;
    case 'P':
      r->pattern = parse_pattern(g.arg());
      return r->pattern < 0 ? -EINVAL : 0;
    default:
      return command_usage(cmd(command));
  }
}

// read's checks after its flags, in qemu-io's order.
int check_read(const Getopt& g, ReadSpec* r) {
  if (g.index() != g.argc() - 2) return command_usage(cmd("read"));
  if (!parse_number(g.word(g.index()), &r->offset)) return -EINVAL;
  if (!parse_length(g.word(g.index() + 1), &r->count, "length cannot exceed %lld, given %s\n")) {
    return -EINVAL;
  }
  if (r->pattern < 0 && (r->has_pattern_count || r->has_pattern_offset)) {
    return command_usage(cmd("read"));
  }
  if (!r->has_pattern_count) r->pattern_count = r->count - r->pattern_offset;
  if (r->pattern_count < 0 || r->pattern_count + r->pattern_offset > r->count) {
    std::printf("pattern verification range exceeds end of read data\n");
    return -EINVAL;
  }
  if (r->vmstate && !sector_aligned(r->offset, r->count)) return -EINVAL;
  return 0;
}

Task<int> co_read_cmd(Session& s, Argv argv) {
  Getopt g(argv);
  ReadSpec r;
  for (int c; (c = g.next("bCl:pP:qs:v")) != -1;) {
    if (int e = parse_read_flag(c, g, &r, "read"); e < 0) co_return e;
  }
  if (int e = check_read(g, &r); e < 0) co_return e;
  co_return co_await co_do_read(s, r, "read");
}

// readv and aio_read: offset, then one or more lengths.
int parse_vector(const Getopt& g, ReadSpec* r) {
  if (!parse_number(g.word(g.index()), &r->offset)) return -EINVAL;
  r->count = 0;
  for (int i = g.index() + 1; i < g.argc(); i++) {
    int64_t len;
    if (!parse_vector_length(g.word(i), r->count, &len)) return -EINVAL;
    r->count += len;
  }
  r->pattern_count = r->count;
  return 0;
}

Task<int> co_readv_cmd(Session& s, Argv argv) {
  Getopt g(argv);
  ReadSpec r;
  for (int c; (c = g.next("CP:qv")) != -1;) {
    if (int e = parse_read_flag(c, g, &r, "readv"); e < 0) co_return e;
  }
  if (g.index() > g.argc() - 2) co_return command_usage(cmd("readv"));
  if (int e = parse_vector(g, &r); e < 0) co_return e;
  co_return co_await co_do_read(s, r, "readv");
}

Task<void> co_aio_read(Session& s, ReadSpec r) {
  (void)co_await co_do_read(s, r, "readv");
}

Task<int> co_aio_read_cmd(Session& s, Argv argv) {
  Getopt g(argv);
  ReadSpec r;
  for (int c; (c = g.next("CP:iqv")) != -1;) {
    if (c == 'i') co_return inject_invalid(s, false);
    if (int e = parse_read_flag(c, g, &r, "aio_read"); e < 0) co_return e;
  }
  if (g.index() > g.argc() - 2) co_return command_usage(cmd("aio_read"));
  if (int e = parse_vector(g, &r); e < 0) co_return e;
  s.spawn(co_aio_read(s, r));
  co_return 0;
}

Task<int> co_do_write(Session& s, WriteSpec w, const char* verb) {
  if (!writable_or_report(s)) co_return -EPERM;
  std::vector<uint8_t> buf;
  if (!w.zeroes && !fill_write_buffer(w, &buf)) co_return -EINVAL;
  uint64_t t0 = Loop::now_ns();
  auto res = co_await co_checked_write(s, w, buf);
  uint64_t ns = Loop::now_ns() - t0;
  if (!res) co_return report_failure(verb, res.error());
  if (!w.quiet) print_report("wrote", ns, w.offset, w.count, w.count, 1, w.machine);
  co_return 0;
}

// qemu-io's refusals of write flag combinations, in its order.
bool write_flags_ok(const WriteSpec& w) {
  const char* problem = nullptr;
  if (w.vmstate && w.zeroes) problem = "-b and -z cannot be specified at the same time";
  if (!problem && w.fua && (w.vmstate || w.compressed)) {
    problem = "-f and -b or -c cannot be specified at the same time";
  }
  if (!problem && w.no_fallback && !w.zeroes) problem = "-n requires -z to be specified";
  if (!problem && w.unmap && !w.zeroes) problem = "-u requires -z to be specified";
  if (!problem && int(w.zeroes) + int(w.pattern_given) + int(!w.source.empty()) > 1) {
    problem = "Only one of -z, -P, and -s can be specified at the same time";
  }
  if (problem) std::printf("%s\n", problem);
  return !problem;
}

int parse_write_flag(int c, const Getopt& g, WriteSpec* w) {
  switch (c) {
    case 'b':
      w->vmstate = true;
      return 0;
    case 'c':
      w->compressed = true;
      return 0;
    case 'C':
      w->machine = true;
      return 0;
    case 'f':
      w->fua = true;
      return 0;
    case 'n':
      w->no_fallback = true;
      return 0;
    case 'p':
      return 0;  // ignored, as in qemu-io
    case 'q':
      w->quiet = true;
      return 0;
    case 's':
      w->source = g.arg();
      return 0;
    case 'u':
      w->unmap = true;
      return 0;
    case 'z':
      w->zeroes = true;
      return 0;
    case 'P':
      w->pattern_given = true;
      w->pattern = parse_pattern(g.arg());
      return w->pattern < 0 ? -EINVAL : 0;
    default:
      return command_usage(cmd("write"));
  }
}

Task<int> co_write_cmd(Session& s, Argv argv) {
  Getopt g(argv);
  WriteSpec w;
  for (int c; (c = g.next("bcCfnpP:qs:uz")) != -1;) {
    if (int e = parse_write_flag(c, g, &w); e < 0) co_return e;
  }
  if (g.index() != g.argc() - 2) co_return command_usage(cmd("write"));
  if (!write_flags_ok(w)) co_return -EINVAL;
  if (!parse_number(g.word(g.index()), &w.offset)) co_return -EINVAL;
  const char* too_long = w.no_fallback ? "length cannot exceed %lld, given %s\n"
                                       : "length cannot exceed %lld without -n, given %s\n";
  if (!parse_length(g.word(g.index() + 1), &w.count, too_long)) co_return -EINVAL;
  if ((w.vmstate || w.compressed) && !sector_aligned(w.offset, w.count)) co_return -EINVAL;
  co_return co_await co_do_write(s, w, "write");
}

// writev and aio_write: offset, then one or more lengths.
int parse_write_vector(const Getopt& g, WriteSpec* w) {
  if (!parse_number(g.word(g.index()), &w->offset)) return -EINVAL;
  w->count = 0;
  for (int i = g.index() + 1; i < g.argc(); i++) {
    int64_t len;
    if (!parse_vector_length(g.word(i), w->count, &len)) return -EINVAL;
    w->count += len;
  }
  return 0;
}

Task<int> co_writev_cmd(Session& s, Argv argv) {
  Getopt g(argv);
  WriteSpec w;
  for (int c; (c = g.next("CfqP:")) != -1;) {
    if (c != 'C' && c != 'f' && c != 'q' && c != 'P') co_return command_usage(cmd("writev"));
    if (int e = parse_write_flag(c, g, &w); e < 0) co_return e;
  }
  if (g.index() > g.argc() - 2) co_return command_usage(cmd("writev"));
  if (int e = parse_write_vector(g, &w); e < 0) co_return e;
  co_return co_await co_do_write(s, w, "writev");
}

Task<void> co_aio_write(Session& s, WriteSpec w) {
  (void)co_await co_do_write(s, w, "aio_write");
}

Task<int> co_aio_write_cmd(Session& s, Argv argv) {
  Getopt g(argv);
  WriteSpec w;
  for (int c; (c = g.next("CfiqP:uz")) != -1;) {
    if (c == 'i') co_return inject_invalid(s, true);
    if (!std::strchr("CfqPuz", c)) co_return command_usage(cmd("aio_write"));
    if (int e = parse_write_flag(c, g, &w); e < 0) co_return e;
  }
  if (g.index() > g.argc() - 2) co_return command_usage(cmd("aio_write"));
  const char* problem = nullptr;
  if (w.zeroes && g.index() != g.argc() - 2) problem = "-z supports only a single length parameter";
  if (!problem && w.unmap && !w.zeroes) problem = "-u requires -z to be specified";
  if (!problem && w.zeroes && w.pattern_given) {
    problem = "-z and -P cannot be specified at the same time";
  }
  if (problem) {
    std::printf("%s\n", problem);
    co_return -EINVAL;
  }
  if (int e = parse_write_vector(g, &w); e < 0) co_return e;
  if (!writable_or_report(s)) co_return -EPERM;
  s.spawn(co_aio_write(s, w));
  co_return 0;
}

}  // namespace

void add_rw_commands(std::vector<Command>& table) {
  table.push_back({"read", "r", 2, -1, true, "[-abCqv] [-P pattern [-s off] [-l len]] off len",
                   "reads a number of bytes at a specified offset", kReadHelp, co_read_cmd});
  table.push_back({"readv", nullptr, 2, -1, true, "[-Cqv] [-P pattern] off len [len..]",
                   "reads a number of bytes at a specified offset", kReadvHelp, co_readv_cmd});
  table.push_back({"aio_read", nullptr, 2, -1, true, "[-Ciqv] [-P pattern] off len [len..]",
                   "asynchronously reads a number of bytes", kAioReadHelp, co_aio_read_cmd});
  table.push_back({"write", "w", 2, -1, true, "[-bcCfnquz] [-P pattern | -s source_file] off len",
                   "writes a number of bytes at a specified offset", kWriteHelp, co_write_cmd});
  table.push_back({"writev", nullptr, 2, -1, true, "[-Cfq] [-P pattern] off len [len..]",
                   "writes a number of bytes at a specified offset", kWritevHelp, co_writev_cmd});
  table.push_back({"aio_write", nullptr, 2, -1, true, "[-Cfiquz] [-P pattern] off len [len..]",
                   "asynchronously writes a number of bytes", kAioWriteHelp, co_aio_write_cmd});
}

}  // namespace strata::io
