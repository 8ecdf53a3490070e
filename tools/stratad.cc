// stratad: the Strata storage daemon, a drop-in for qemu-storage-daemon.
// The work is in tools/stratad/ (options.cc, startup.cc, daemon.cc).
#include "stratad/daemon.h"
#include "stratad/options.h"

#include <cstdio>

int main(int argc, char** argv) {
  auto cl = strata::stratad::parse_command_line(argc, argv);
  if (!cl) {
    std::fprintf(stderr, "stratad: %s\nTry '%s --help' for more information.\n",
                 cl.error().message.c_str(), argv[0]);
    return 1;
  }
  if (cl->help) {
    strata::stratad::print_help(argv[0]);
    return 0;
  }
  if (cl->version) {
    strata::stratad::print_version();
    return 0;
  }
  return strata::stratad::run_daemon(*cl);
}
