// strata-nbd: serve a disk image over NBD, with qemu-nbd's command line.
//
// Usage: strata-nbd [-f FMT] [-r] [-t] [-k SOCKET | -b ADDR -p PORT] [-e N]
//                   [-x NAME] [-D TEXT] [-B BITMAP]... [-A]
//                   [--object tls-creds-x509|tls-creds-psk,id=ID,...
//                    --tls-creds ID] [--fork] [--pid-file PATH] IMAGE
// See docs/tools/strata-nbd.md.
#include <cstdio>

#include "strata_nbd/options.h"
#include "strata_nbd/serve.h"

int main(int argc, char** argv) {
  using namespace strata::tools::nbd_tool;
  auto options = parse_options(argc, argv);
  if (!options) {
    std::fprintf(stderr, "strata-nbd: %s\nTry 'strata-nbd --help' for more information.\n",
                 options.error().message.c_str());
    return 1;
  }
  if (options->help) {
    std::fputs(usage(), stdout);
    return 0;
  }
  if (options->version) {
    std::printf("strata-nbd %s\n", STRATA_VERSION);
    return 0;
  }
  return run(*options);
}
