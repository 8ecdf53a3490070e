// Command-line parsing: long options with "--name value" or "--name=value".
#include "stratad/options.h"

#include <cstdio>
#include <cstring>

#include "qmp/dispatcher.h"

namespace strata::stratad {

namespace {

const char* const kActionOptions[] = {"blockdev", "chardev",    "monitor",
                                      "object",   "nbd-server", "export"};

bool is_action(const std::string& name) {
  for (const char* a : kActionOptions) {
    if (name == a) return true;
  }
  return false;
}

}  // namespace

Result<CommandLine> parse_command_line(int argc, char** argv) {
  CommandLine cl;
  for (int i = 1; i < argc; i++) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      cl.help = true;
      continue;
    }
    if (arg == "-V" || arg == "--version") {
      cl.version = true;
      continue;
    }
    if (arg.rfind("--", 0) != 0) return Error{EINVAL, "Unexpected argument: " + arg};
    std::string name = arg.substr(2);
    std::string value;
    bool has_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    if (name == "daemonize") {
      cl.daemonize = true;
      continue;
    }
    bool takes_value = is_action(name) || name == "pidfile" || name == "trace";
    if (!takes_value) return Error{EINVAL, "Unknown option '--" + name + "'"};
    if (!has_value) {
      if (i + 1 >= argc) return Error{EINVAL, "Option '--" + name + "' requires an argument"};
      value = argv[++i];
    }
    if (name == "pidfile") {
      cl.pidfile = value;
    } else if (name == "trace") {
      // Accepted for compatibility; Strata has no trace events.
    } else {
      cl.actions.push_back({name, value});
    }
  }
  return cl;
}

void print_help(const char* argv0) {
  std::printf(
      "Usage: %s [options]\n"
      "Strata storage daemon (qemu-storage-daemon compatible command line)\n"
      "\n"
      "  -h, --help                display this help and exit\n"
      "  -V, --version             output version information and exit\n"
      "\n"
      "  --blockdev [driver=]<driver>[,node-name=<N>][,discard=ignore|unmap]\n"
      "             [,cache.direct=on|off][,cache.no-flush=on|off]\n"
      "             [,read-only=on|off][,auto-read-only=on|off]\n"
      "             [,force-share=on|off][,detect-zeroes=on|off|unmap]\n"
      "             [,<driver options>]\n"
      "             configure a block backend (also accepts a JSON object)\n"
      "  --chardev socket,id=<id>,path=<path>[,server=on][,wait=off]\n"
      "  --chardev socket,id=<id>,host=<host>,port=<port>[,server=on][,wait=off]\n"
      "             a listening socket for a monitor\n"
      "  --monitor [chardev=]<id>[,mode=control][,pretty=on|off]\n"
      "             a QMP monitor on the chardev <id>\n"
      "  --object secret,id=<id>,data=<string>|file=<path>[,format=raw|base64]\n"
      "             a secret (also accepts a JSON object)\n"
      "  --nbd-server addr.type=inet,addr.host=<host>,addr.port=<port>[,...]\n"
      "  --nbd-server addr.type=unix,addr.path=<path>[,...]\n"
      "             start the NBD server (when Strata's NBD server is built in)\n"
      "  --export [type=]nbd,id=<id>,node-name=<node>[,name=<name>][,writable=on|off]\n"
      "             export a node (when Strata's NBD server is built in)\n"
      "  --daemonize               daemonize the process, and have the parent exit\n"
      "                            once startup is complete\n"
      "  --pidfile <path>          write process ID to a file after startup\n",
      argv0);
}

void print_version() {
  auto v = qmp::version_info();
  std::printf("stratad version %s (QMP compatible with QEMU %d.%d.%d)\n", STRATA_VERSION,
              v["qemu"]["major"].get<int>(), v["qemu"]["minor"].get<int>(),
              v["qemu"]["micro"].get<int>());
}

}  // namespace strata::stratad
