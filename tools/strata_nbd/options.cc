#include "strata_nbd/options.h"

#include <getopt.h>

#include <cstdlib>
#include <string>
#include <vector>

namespace strata::tools::nbd_tool {

namespace {
enum LongOnly {
  kOptObject = 256,
  kOptTlsCreds,
  kOptTlsAuthz,
  kOptFork,
  kOptPidFile,
  kOptCache,
  kOptAio,
  kOptDiscard,
  kOptDetectZeroes,
  kOptImageOpts,
};

// What getopt itself would have printed (qemu-nbd lets it).
std::string getopt_message(int c, int argc, char** argv) {
  std::string word = optind > 0 && optind <= argc ? argv[optind - 1] : "";
  bool is_long = word.rfind("--", 0) == 0;
  if (c == ':') {
    if (is_long) return "option '" + word.substr(0, word.find('=')) + "' requires an argument";
    return std::string("option requires an argument -- '") + char(optopt) + "'";
  }
  if (is_long || !optopt) return "unrecognized option '" + word + "'";
  return std::string("invalid option -- '") + char(optopt) + "'";
}

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
         "  -L, --list                list the exports of another NBD server\n"
         "      --object TYPE,id=ID,...  tls-creds-x509, tls-creds-psk, authz-simple,\n"
         "                            authz-list (JSON form) or authz-list-file\n"
         "      --tls-creds=ID        require TLS with the credentials object ID\n"
         "      --tls-authz=ID        allow only the TLS clients the authz object ID allows\n"
         "  -T, --trace [[enable=]PATTERN][,events=FILE][,file=FILE]\n"
         "                            debug log (to FILE)\n"
         "  -n, --nocache             as --cache=none\n"
         "      --cache=MODE          none, writeback, writethrough, directsync, unsafe\n"
         "      --aio=MODE            native, io_uring or threads\n"
         "      --discard=MODE        ignore or unmap\n"
         "      --detect-zeroes=MODE  off, on or unmap\n"
         "      --image-opts          FILE is a set of image options\n"
         "      --fork                run in the background once listening\n"
         "      --pid-file=PATH       write the process id to PATH\n"
         "  -v, --verbose             log more\n"
         "  -h, --help                this text\n"
         "  -V, --version             version\n";
}

namespace {

// The items of a key=value list; ",," is a comma inside a value (QemuOpts).
std::vector<std::string> split_keyval(const std::string& text) {
  std::vector<std::string> items(1);
  for (size_t i = 0; i < text.size(); i++) {
    if (text[i] == ',' && i + 1 < text.size() && text[i + 1] == ',') {
      items.back() += ',';
      i++;
    } else if (text[i] == ',') {
      items.emplace_back();
    } else {
      items.back() += text[i];
    }
  }
  return items;
}

}  // namespace

Result<ObjectSpec> parse_object(const std::string& text) {
  ObjectSpec spec;
  if (!text.empty() && text[0] == '{') {
    spec.json = nlohmann::json::parse(text, nullptr, false);
    if (spec.json.is_discarded() || !spec.json.is_object()) {
      return Error{EINVAL, "Invalid JSON object given"};
    }
    for (auto it = spec.json.begin(); it != spec.json.end(); ++it) {
      if (it->is_string()) {
        spec.props[it.key()] = it->get<std::string>();
      } else if (it->is_boolean()) {
        spec.props[it.key()] = it->get<bool>() ? "on" : "off";
      } else if (it->is_number()) {
        spec.props[it.key()] = it->dump();
      }
    }
    spec.type = spec.props["qom-type"];
    spec.props.erase("qom-type");
    spec.json.erase("qom-type");
    if (spec.type.empty()) return Error{EINVAL, "Parameter 'qom-type' is missing"};
    if (!spec.props.count("id")) return Error{EINVAL, "Parameter 'id' is missing"};
    return spec;
  }
  bool first = true;
  for (const std::string& item : split_keyval(text)) {
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
  for (const auto& [k, v] : spec.props) spec.json[k] = v;
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
      {"tls-authz", required_argument, nullptr, kOptTlsAuthz},
      {"list", no_argument, nullptr, 'L'},
      {"trace", required_argument, nullptr, 'T'},
      {"nocache", no_argument, nullptr, 'n'},
      {"aio", required_argument, nullptr, kOptAio},
      {"image-opts", no_argument, nullptr, kOptImageOpts},
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
  bool seen_cache = false, seen_aio = false, per_device = false;
  while ((c = getopt_long(argc, argv, ":p:b:k:e:tx:D:rf:B:AvhVLT:n", long_opts, nullptr)) != -1) {
    // qemu-nbd's per-device settings, which list mode refuses.
    per_device |= c == 'x' || c == 'D' || c == 'f' || c == 'B' || c == 'A' || c == 'n' ||
                  c == kOptCache || c == kOptAio || c == kOptDiscard || c == kOptDetectZeroes;
    switch (c) {
      case 'p': {
        STRATA_TRY_ASSIGN(int port, parse_int("port", optarg, 0, 65535));
        o.port = static_cast<uint16_t>(port);
        break;
      }
      case 'b':
        o.bind = optarg;
        o.bind_set = true;
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
      case 'n':
      case kOptCache:
        if (seen_cache) return Error{EINVAL, "-n and --cache can only be specified once"};
        seen_cache = true;
        o.cache = c == 'n' ? "none" : optarg;
        if (o.cache != "none" && o.cache != "directsync" && o.cache != "writeback" &&
            o.cache != "writethrough" && o.cache != "unsafe" && o.cache != "off") {
          return Error{EINVAL, "Invalid cache mode `" + o.cache + "'"};
        }
        if (o.cache == "off") o.cache = "none";
        break;
      case kOptAio:
        if (seen_aio) return Error{EINVAL, "--aio can only be specified once"};
        seen_aio = true;
        o.aio = optarg;
        if (o.aio != "native" && o.aio != "io_uring" && o.aio != "threads") {
          return Error{EINVAL, "Invalid aio mode '" + o.aio + "'"};
        }
        break;
      case kOptImageOpts:
        o.image_opts = true;
        break;
      case kOptTlsAuthz:
        o.tls_authz = optarg;
        break;
      case 'L':
        o.list = true;
        break;
      case 'T':
        o.trace = optarg;
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
      default:
        return Error{kErrorTryHelpPrefixed, getopt_message(c, argc, argv)};
    }
  }
  if (!o.tls_authz.empty() && o.tls_creds.empty()) {
    return Error{EINVAL, "--tls-authz is not permitted without --tls-creds"};
  }
  if (o.list) {
    if (optind != argc) return Error{EINVAL, "List mode is incompatible with a file name"};
    if (per_device) return Error{EINVAL, "List mode is incompatible with per-device settings"};
    if (o.fork) return Error{EINVAL, "List mode is incompatible with forking"};
    if (!o.bind_set) o.bind = "localhost";
  } else if (optind != argc - 1) {
    return Error{kErrorTryHelp, "Invalid number of arguments"};
  } else {
    o.image = argv[optind];
  }
  if (o.image_opts && !o.format.empty()) {
    return Error{EINVAL, "--image-opts and -f are mutually exclusive"};
  }
  if (!o.socket_path.empty() && o.bind_set) {
    return Error{EINVAL, "bind and socket paths cannot be used together"};
  }
  return o;
}

}  // namespace strata::tools::nbd_tool
