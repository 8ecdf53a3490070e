// stratad's command line, as qemu-storage-daemon's: the options are kept in
// the order given because they are applied in that order (a --blockdev may
// name a node an earlier one added, a --monitor a chardev defined before).
// Thread rules: plain data.
#pragma once

#include <string>
#include <vector>

#include "strata/result.h"

namespace strata::stratad {

struct ActionOption {
  std::string name;   // "blockdev", "chardev", "monitor", "object", "nbd-server", "export"
  std::string value;  // the argument as given
};

struct CommandLine {
  std::vector<ActionOption> actions;
  bool daemonize = false;
  std::string pidfile;
  bool help = false;
  bool version = false;
};

Result<CommandLine> parse_command_line(int argc, char** argv);
void print_help(const char* argv0);
void print_version();

}  // namespace strata::stratad
