#include "strata_nbd/options.h"

#include <getopt.h>

#include <cstdlib>

namespace strata::tools::nbd_tool {

namespace {
enum LongOnly {
  kOptObject = 256,
  kOptTlsCreds,
  kOptFork,
  kOptPidFile,
  kOptCache,
  kOptDiscard,
  kOptDetectZeroes,
};

Result<int> parse_int(const std::string& what, const char* text, long lo, long hi) {
  char* end = nullptr;
  long v = std::strtol(text, &end, 10);
  if (!*text || *end || v < lo || v > hi) {
    return Error{EINVAL, "Invalid " + what + " '" + std::string(text) + "'"};
  }
  return static_cast<int>(v);
}
}  // namespace

const char* usage() {
  return "Usage: strata-nbd [OPTIONS] FILE\n"
         "Serve FILE over NBD (options as qemu-nbd).\n\n"
         "  -p, --port=PORT           port to listen on (default 10809)\n"
         "  -b, --bind=IFACE          interface to bind to (default 0.0.0.0)\n"
         "  -k, --socket=PATH         listen on a Unix socket instead of TCP\n"
         "  -e, --shared=NUM          serve up to NUM clients at once (default 1, 0: no limit)\n"
         "  -t, --persistent          do not exit when the last client disconnects\n"
         "  -x, --export-name=NAME    export name (default \"\")\n"
         "  -D, --description=TEXT    export description\n"
         "  -r, --read-only           export read-only\n"
         "  -f, --format=FORMAT       image format (raw, qcow2; probed if omitted)\n"
         "  -B, --bitmap=NAME         expose dirty bitmap NAME (qemu:dirty-bitmap:NAME)\n"
         "  -A, --allocation-depth    expose qemu:allocation-depth\n"
         "      --object TYPE,id=ID,...  tls-creds-x509 or tls-creds-psk\n"
         "      --tls-creds=ID        require TLS with the credentials object ID\n"
         "      --cache=MODE          none, writeback, writethrough, directsync, unsafe\n"
         "      --discard=MODE        ignore or unmap\n"
         "      --detect-zeroes=MODE  off, on or unmap\n"
         "      --fork                run in the background once listening\n"
         "      --pid-file=PATH       write the process id to PATH\n"
         "  -v, --verbose             log more\n"
         "  -h, --help                this text\n"
         "  -V, --version             version\n";
}

Result<ObjectSpec> parse_object(const std::string& text) {
  ObjectSpec spec;
  size_t pos = 0;
  bool first = true;
  while (pos <= text.size()) {
    size_t comma = text.find(',', pos);
    std::string item =
        text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    pos = comma == std::string::npos ? text.size() + 1 : comma + 1;
    size_t eq = item.find('=');
    if (first && eq == std::string::npos) {
      spec.type = item;
    } else if (eq == std::string::npos) {
      return Error{EINVAL, "Invalid object option '" + item + "'"};
    } else if (item.substr(0, eq) == "qom-type") {
      spec.type = item.substr(eq + 1);
    } else {
      spec.props[item.substr(0, eq)] = item.substr(eq + 1);
    }
    first = false;
  }
  if (spec.type.empty()) return Error{EINVAL, "Parameter 'qom-type' is missing"};
  if (!spec.props.count("id")) return Error{EINVAL, "Parameter 'id' is missing"};
  return spec;
}

Result<Options> parse_options(int argc, char** argv) {
  static const option long_opts[] = {
      {"port", required_argument, nullptr, 'p'},
      {"bind", required_argument, nullptr, 'b'},
      {"socket", required_argument, nullptr, 'k'},
      {"shared", required_argument, nullptr, 'e'},
      {"persistent", no_argument, nullptr, 't'},
      {"export-name", required_argument, nullptr, 'x'},
      {"description", required_argument, nullptr, 'D'},
      {"read-only", no_argument, nullptr, 'r'},
      {"format", required_argument, nullptr, 'f'},
      {"bitmap", required_argument, nullptr, 'B'},
      {"allocation-depth", no_argument, nullptr, 'A'},
      {"object", required_argument, nullptr, kOptObject},
      {"tls-creds", required_argument, nullptr, kOptTlsCreds},
      {"fork", no_argument, nullptr, kOptFork},
      {"pid-file", required_argument, nullptr, kOptPidFile},
      {"cache", required_argument, nullptr, kOptCache},
      {"discard", required_argument, nullptr, kOptDiscard},
      {"detect-zeroes", required_argument, nullptr, kOptDetectZeroes},
      {"verbose", no_argument, nullptr, 'v'},
      {"help", no_argument, nullptr, 'h'},
      {"version", no_argument, nullptr, 'V'},
      {nullptr, 0, nullptr, 0},
  };
  Options o;
  optind = 1;
  opterr = 0;
  int c;
  while ((c = getopt_long(argc, argv, "p:b:k:e:tx:D:rf:B:AvhV", long_opts, nullptr)) != -1) {
    switch (c) {
      case 'p': {
        STRATA_TRY_ASSIGN(int port, parse_int("port", optarg, 0, 65535));
        o.port = static_cast<uint16_t>(port);
        break;
      }
      case 'b':
        o.bind = optarg;
        break;
      case 'k':
        o.socket_path = optarg;
        break;
      case 'e': {
        STRATA_TRY_ASSIGN(o.shared, parse_int("shared device number", optarg, 0, 1 << 20));
        break;
      }
      case 't':
        o.persistent = true;
        break;
      case 'x':
        o.export_name = optarg;
        break;
      case 'D':
        o.description = optarg;
        break;
      case 'r':
        o.read_only = true;
        break;
      case 'f':
        o.format = optarg;
        break;
      case 'B':
        o.bitmaps.push_back(optarg);
        break;
      case 'A':
        o.allocation_depth = true;
        break;
      case kOptObject: {
        STRATA_TRY_ASSIGN(ObjectSpec spec, parse_object(optarg));
        o.objects.push_back(std::move(spec));
        break;
      }
      case kOptTlsCreds:
        o.tls_creds = optarg;
        break;
      case kOptFork:
        o.fork = true;
        break;
      case kOptPidFile:
        o.pid_file = optarg;
        break;
      case kOptCache:
        o.cache = optarg;
        break;
      case kOptDiscard:
        o.discard = optarg;
        break;
      case kOptDetectZeroes:
        o.detect_zeroes = optarg;
        break;
      case 'v':
        o.verbose = true;
        break;
      case 'h':
        o.help = true;
        return o;
      case 'V':
        o.version = true;
        return o;
      default: {
        std::string bad = optind > 0 && optind <= argc ? argv[optind - 1] : "?";
        return Error{EINVAL, "Unknown or incomplete option '" + bad + "'"};
      }
    }
  }
  if (optind != argc - 1) {
    return Error{EINVAL, optind >= argc ? "Expected an image file name" : "Too many arguments"};
  }
  o.image = argv[optind];
  if (!o.socket_path.empty() && o.bind != "0.0.0.0") {
    return Error{EINVAL, "bind and socket paths cannot be used together"};
  }
  return o;
}

}  // namespace strata::tools::nbd_tool
