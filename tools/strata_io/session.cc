#include "strata_io/session.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "strata_io/getopt.h"

namespace strata::io {

namespace {

// qemu-io's breakline: words separated by single spaces, empty ones dropped.
Argv split_words(const std::string& line) {
  Argv out;
  size_t start = 0;
  while (start <= line.size()) {
    size_t end = line.find(' ', start);
    if (end == std::string::npos) end = line.size();
    if (end > start) out.push_back(line.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

std::vector<Command> build_table() {
  std::vector<Command> table;
  add_rw_commands(table);
  add_misc_commands(table);
  std::sort(table.begin(), table.end(),
            [](const Command& a, const Command& b) { return std::strcmp(a.name, b.name) < 0; });
  return table;
}

// "bad argument count N to CMD, expected ..." on stderr, as qemu-io.
bool check_count(const Command& c, const Argv& argv) {
  int n = int(argv.size()) - 1;
  if (n >= c.argmin && (c.argmax == -1 || n <= c.argmax)) return true;
  const char* cmd = argv[0].c_str();
  if (c.argmax == -1) {
    std::fprintf(stderr, "bad argument count %d to %s, expected at least %d arguments\n", n, cmd,
                 c.argmin);
  } else if (c.argmin == c.argmax) {
    std::fprintf(stderr, "bad argument count %d to %s, expected %d arguments\n", n, cmd, c.argmin);
  } else {
    std::fprintf(stderr, "bad argument count %d to %s, expected between %d and %d arguments\n", n,
                 cmd, c.argmin, c.argmax);
  }
  return false;
}

}  // namespace

const std::vector<Command>& command_table() {
  static const std::vector<Command> table = build_table();
  return table;
}

const Command* find_command(const std::string& word) {
  for (const Command& c : command_table()) {
    if (word == c.name || (c.altname && word == c.altname)) return &c;
  }
  return nullptr;
}

int command_usage(const Command& command) {
  std::printf("%s %s -- %s\n", command.name, command.args, command.oneline);
  return -EINVAL;
}

Session::Session(Engine& engine, std::unique_ptr<Drive> drive, bool writethrough)
    : engine_(engine), drive_(std::move(drive)), writethrough_(writethrough), aio_(engine.loop()) {}

Session::~Session() = default;

Task<bool> Session::co_run(std::string line) {
  Argv argv = split_words(line);
  if (argv.empty()) co_return true;
  const Command* c = find_command(argv[0]);
  if (!c) {
    std::fprintf(stderr, "command \"%s\" not found\n", argv[0].c_str());
    co_return false;
  }
  if (c->needs_image && !drive_) {
    std::fprintf(stderr, "no file open, try 'help open'\n");
    co_return false;
  }
  if (!check_count(*c, argv)) co_return false;
  int r = co_await c->run(*this, std::move(argv));
  co_return r >= 0;
}

Task<void> Session::co_close() {
  co_await aio_.co_join();
  if (!drive_) co_return;
  co_await drive_->co_close();
  drive_.reset();
}

}  // namespace strata::io
