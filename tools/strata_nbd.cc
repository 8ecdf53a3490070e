// strata-nbd: serve a disk image over NBD, with qemu-nbd's command line.
//
// Usage: strata-nbd [-f FMT | --image-opts] [-r] [-t] [-k SOCKET | -b ADDR -p PORT] [-e N]
//                   [-x NAME] [-D TEXT] [-B BITMAP]... [-A] [-n] [--cache MODE] [--aio MODE]
//                   [--object tls-creds-x509|tls-creds-psk|authz-...,id=ID,...
//                    --tls-creds ID [--tls-authz ID]] [-T TRACE] [--fork] [--pid-file PATH] IMAGE
//        strata-nbd -L [-k SOCKET | -b ADDR -p PORT] [--object ... --tls-creds ID]
// See docs/tools/strata-nbd.md.
#include <cstdio>

#include "strata_nbd/list.h"
#include "strata_nbd/options.h"
#include "strata_nbd/serve.h"

int main(int argc, char** argv) {
  using namespace strata::tools::nbd_tool;
  auto options = parse_options(argc, argv);
  if (!options) {
    const strata::Error& e = options.error();
    std::fprintf(stderr, "strata-nbd: %s\n", e.message.c_str());
    if (e.code == kErrorTryHelpPrefixed) {
      std::fprintf(stderr, "strata-nbd: Try `strata-nbd --help' for more information.\n");
    } else if (e.code == kErrorTryHelp) {
      std::fprintf(stderr, "Try `strata-nbd --help' for more information.\n");
    }
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
  if (options->list) return run_list(*options);
  return run(*options);
}
