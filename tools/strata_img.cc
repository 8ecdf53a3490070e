// strata-img: the offline image tool, with qemu-img's subcommands, flags and
// output (human and --output=json). Each subcommand lives in
// tools/strata_img/<name>.cc; this file only dispatches.
#include <cstdio>
#include <cstring>

#include "strata_img/bitmap.h"
#include "strata_img/common.h"

namespace {

struct Command {
  const char* name;
  int (*run)(strata::Engine&, const strata::img::Args&);
};

const Command kCommands[] = {
    {"create", strata::img::cmd_create},   {"info", strata::img::cmd_info},
    {"check", strata::img::cmd_check},     {"map", strata::img::cmd_map},
    {"compare", strata::img::cmd_compare}, {"convert", strata::img::cmd_convert},
    {"resize", strata::img::cmd_resize},   {"snapshot", strata::img::cmd_snapshot},
    {"commit", strata::img::cmd_commit},   {"rebase", strata::img::cmd_rebase},
    {"amend", strata::img::cmd_amend},     {"measure", strata::img::cmd_measure},
    {"bitmap", strata::img::cmd_bitmap},
};

void usage() {
  std::printf("Usage: strata-img COMMAND [options]\nCommands:");
  for (const auto& c : kCommands) std::printf(" %s", c.name);
  std::printf("\nOptions and output follow qemu-img.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(
        stderr, "strata-img: Not enough arguments\nTry 'strata-img --help' for more information\n");
    return 1;
  }
  std::string name = argv[1];
  if (name == "-h" || name == "--help") {
    usage();
    return 0;
  }
  if (name == "-V" || name == "--version") {
    std::printf("strata-img version %s\n", STRATA_VERSION);
    return 0;
  }
  for (const auto& c : kCommands) {
    if (name != c.name) continue;
    strata::img::Args args(argv + 1, argv + argc);
    strata::EngineOptions opts;
    // One job per process: a whole 2 MiB copy chunk may be written to tmpfs
    // on the loop thread (docs/benchmarks.md, qcow2 section).
    opts.max_inline_write = 4 << 20;
    strata::Engine engine(opts);
    int rc = c.run(engine, args);
    engine.run(engine.co_close_all());
    return rc;
  }
  std::fprintf(stderr, "strata-img: Command not found: %s\n", name.c_str());
  return 1;
}
