// strata-io's other commands: discard, flush, aio_flush, truncate, length,
// info, alloc, map, sleep, help, quit, close, abort, sigraise (qemu-io's),
// and echo (strata-io's own: prints its words, to mark progress in a pipe).
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "block/core/node.h"
#include "strata_io/getopt.h"
#include "strata_io/io_util.h"
#include "strata_io/report.h"
#include "strata_io/session.h"

namespace strata::io {

namespace {

Task<int> co_discard_cmd(Session& s, Argv argv) {
  Getopt g(argv);
  bool machine = false, quiet = false;
  for (int c; (c = g.next("Cq")) != -1;) {
    if (c == 'C') {
      machine = true;
    } else if (c == 'q') {
      quiet = true;
    } else {
      co_return command_usage(*find_command("discard"));
    }
  }
  if (g.index() != g.argc() - 2) co_return command_usage(*find_command("discard"));
  int64_t offset, bytes;
  if (!parse_number(g.word(g.index()), &offset)) co_return -EINVAL;
  if (!parse_length(g.word(g.index() + 1), &bytes, "length cannot exceed %lld, given %s\n")) {
    co_return -EINVAL;
  }
  if (!writable_or_report(s)) co_return -EPERM;
  uint64_t t0 = Loop::now_ns();
  auto r = co_await s.drive()->co_discard(uint64_t(offset), uint64_t(bytes));
  uint64_t ns = Loop::now_ns() - t0;
  if (!r) co_return report_failure("discard", r.error());
  if (!quiet) print_report("discard", ns, offset, bytes, bytes, 1, machine);
  co_return 0;
}

Task<int> co_flush_cmd(Session& s, Argv) {
  auto r = co_await s.drive()->co_flush();
  co_return r ? 0 : -r.error().code;
}

Task<int> co_aio_flush_cmd(Session& s, Argv) {
  co_await s.co_join();
  co_return 0;
}

// truncate [-m prealloc_mode] off
Task<int> co_truncate_cmd(Session& s, Argv argv) {
  Getopt g(argv);
  Preallocation prealloc = Preallocation::kOff;
  for (int c; (c = g.next("m:")) != -1;) {
    if (c != 'm') co_return command_usage(*find_command("truncate"));
    if (!parse_preallocation(g.arg(), &prealloc)) {
      std::fprintf(stderr, "strata-io: Invalid preallocation mode '%s'\n", g.arg().c_str());
      co_return -EINVAL;
    }
  }
  if (g.index() != g.argc() - 1) co_return command_usage(*find_command("truncate"));
  int64_t size;
  if (!parse_number(g.word(g.index()), &size)) co_return -EINVAL;
  if (!writable_or_report(s)) co_return -EPERM;
  auto r = co_await s.drive()->co_resize(uint64_t(size), prealloc);
  if (r) co_return 0;
  std::fprintf(stderr, "strata-io: %s\n", r.error().message.c_str());
  co_return -r.error().code;
}

Task<int> co_length_cmd(Session& s, Argv) {
  std::printf("%s\n", cvtstr(double(s.drive()->size())).c_str());
  co_return 0;
}

// The image node under any filter strata-io put above it (-C).
Node* image_node(Session& s) {
  Node* n = s.drive()->edge()->node();
  while (n->filtered()) n = n->filtered()->node();
  return n;
}

// qemu-io's info without the format-specific block.
Task<int> co_info_cmd(Session& s, Argv) {
  Node* n = image_node(s);
  uint64_t cluster = n->driver().cluster_size();
  uint64_t vm_state = 0;
  if (n->driver_name() == "qcow2" && cluster) {
    uint64_t coverage = cluster * (cluster / 8);  // one L2 table's reach
    vm_state = (n->size() + coverage - 1) / coverage * coverage;
  }
  std::printf("format name: %s\n", n->driver_name().c_str());
  std::printf("cluster size: %s\n", cvtstr(double(cluster)).c_str());
  std::printf("vm state offset: %s\n", cvtstr(double(vm_state)).c_str());
  co_return 0;
}

// Allocation status of [offset, offset + bytes) in the top layer, for as
// long as it stays the same; `*pnum` gets that length (0 at the end).
Task<Result<bool>> co_is_allocated(Session& s, uint64_t offset, uint64_t bytes, uint64_t* pnum) {
  *pnum = 0;
  if (offset >= s.drive()->size() || bytes == 0) co_return false;
  STRATA_CO_TRY_ASSIGN(DriveExtent e, co_await s.drive()->co_block_status(offset, bytes));
  *pnum = std::min(e.length, bytes);
  co_return e.allocated;
}

Task<int> co_alloc_cmd(Session& s, Argv argv) {
  int64_t start, count = 512;
  if (!parse_number(argv[1], &start)) co_return -EINVAL;
  if (argv.size() == 3 && !parse_number(argv[2], &count)) co_return -EINVAL;
  int64_t sum = 0, remaining = count;
  for (uint64_t offset = start; remaining > 0;) {
    uint64_t num;
    auto r = co_await co_is_allocated(s, offset, uint64_t(remaining), &num);
    if (!r) {
      std::printf("is_allocated failed: %s\n", std::strerror(r.error().code));
      co_return -r.error().code;
    }
    if (num == 0) count -= remaining;
    if (*r) sum += int64_t(num);
    remaining = num ? remaining - int64_t(num) : 0;
    offset += num;
  }
  std::printf("%lld/%lld bytes allocated at offset %s\n", (long long)sum, (long long)count,
              cvtstr(double(start)).c_str());
  co_return 0;
}

Task<int> co_map_cmd(Session& s, Argv) {
  uint64_t size = s.drive()->size();
  for (uint64_t offset = 0; offset < size;) {
    uint64_t num, more;
    auto first = co_await co_is_allocated(s, offset, size - offset, &num);
    if (!first) {
      std::fprintf(stderr, "strata-io: Failed to get allocation status: %s\n",
                   std::strerror(first.error().code));
      co_return -first.error().code;
    }
    if (num == 0) {
      std::fprintf(stderr, "strata-io: Unexpected end of image\n");
      co_return -EIO;
    }
    // Merge the following extents with the same status.
    for (;;) {
      auto next = co_await co_is_allocated(s, offset + num, size - offset - num, &more);
      if (!next || *next != *first || more == 0) break;
      num += more;
    }
    std::printf("%s (0x%llx) bytes %s at offset %s (0x%llx)\n", cvtstr(double(num)).c_str(),
                (unsigned long long)num, *first ? "    allocated" : "not allocated",
                cvtstr(double(offset)).c_str(), (unsigned long long)offset);
    offset += num;
  }
  co_return 0;
}

Task<int> co_sleep_cmd(Session& s, Argv argv) {
  char* end = nullptr;
  long ms = std::strtol(argv[1].c_str(), &end, 0);
  if (ms < 0 || *end != '\0') {
    std::printf("%s is not a valid number\n", argv[1].c_str());
    co_return -EINVAL;
  }
  co_await s.engine().loop().co_sleep(uint64_t(ms));
  co_return 0;
}

void help_oneline(const char* name, const Command& c) {
  std::printf("%s ", name);
  if (c.args) std::printf("%s ", c.args);
  std::printf("-- %s\n", c.oneline);
}

Task<int> co_help_cmd(Session&, Argv argv) {
  if (argv.size() == 1) {
    for (const Command& c : command_table()) help_oneline(c.name, c);
    std::printf("\nUse 'help commandname' for extended help.\n");
    co_return 0;
  }
  const Command* c = find_command(argv[1]);
  if (!c) {
    std::printf("command %s not found\n", argv[1].c_str());
    co_return -EINVAL;
  }
  help_oneline(argv[1].c_str(), *c);
  if (c->help) std::printf("%s", c->help);
  co_return 0;
}

Task<int> co_quit_cmd(Session& s, Argv) {
  s.request_quit();
  co_return 0;
}

Task<int> co_close_cmd(Session& s, Argv) {
  co_await s.co_close();
  co_return 0;
}

Task<int> co_echo_cmd(Session&, Argv argv) {
  for (size_t i = 1; i < argv.size(); i++) {
    std::printf("%s%s", i > 1 ? " " : "", argv[i].c_str());
  }
  std::printf("\n");
  co_return 0;
}

Task<int> co_abort_cmd(Session&, Argv) {
  std::abort();
  co_return 0;
}

Task<int> co_sigraise_cmd(Session&, Argv argv) {
  int64_t sig;
  if (!parse_number(argv[1], &sig)) co_return -EINVAL;
  if (sig > NSIG) {
    std::printf("signal argument '%s' is too large to be a valid signal\n", argv[1].c_str());
    co_return -EINVAL;
  }
  std::fflush(stdout);
  std::fflush(stderr);
  std::raise(int(sig));
  co_return 0;
}

}  // namespace

void add_misc_commands(std::vector<Command>& table) {
  table.push_back({"discard", "d", 2, -1, true, "[-Cq] off len",
                   "discards a number of bytes at a specified offset", kDiscardHelp,
                   co_discard_cmd});
  table.push_back({"flush", "f", 0, 0, true, nullptr, "flush all in-core file state to disk",
                   nullptr, co_flush_cmd});
  table.push_back({"aio_flush", nullptr, 0, 0, true, nullptr,
                   "completes all outstanding aio requests", nullptr, co_aio_flush_cmd});
  table.push_back({"truncate", "t", 1, 3, true, "[-m prealloc_mode] off",
                   "truncates the current file at the given offset", nullptr, co_truncate_cmd});
  table.push_back({"length", "l", 0, 0, true, nullptr, "gets the length of the current file",
                   nullptr, co_length_cmd});
  table.push_back({"info", "i", 0, 0, true, nullptr, "prints information about the current file",
                   nullptr, co_info_cmd});
  table.push_back({"alloc", "a", 1, 2, true, "offset [count]",
                   "checks if offset is allocated in the file", nullptr, co_alloc_cmd});
  table.push_back({"map", nullptr, 0, 0, true, "", "prints the allocated areas of a file", nullptr,
                   co_map_cmd});
  table.push_back({"sleep", nullptr, 1, 1, false, nullptr,
                   "waits for the given value in milliseconds", nullptr, co_sleep_cmd});
  table.push_back({"help", "?", 0, 1, false, "[command]", "help for one or all commands", nullptr,
                   co_help_cmd});
  table.push_back({"quit", "q", 0, 0, false, nullptr, "exit the program", nullptr, co_quit_cmd});
  table.push_back(
      {"close", "c", 0, 0, true, nullptr, "close the current open file", nullptr, co_close_cmd});
  table.push_back({"echo", nullptr, 0, -1, false, "[text]",
                   "prints its words (strata-io only: marks progress)", nullptr, co_echo_cmd});
  table.push_back({"abort", nullptr, 0, 0, false, nullptr,
                   "simulate a program crash using abort(3)", nullptr, co_abort_cmd});
  table.push_back(
      {"sigraise", nullptr, 1, 1, false, "signal", "raises a signal", nullptr, co_sigraise_cmd});
}

}  // namespace strata::io
