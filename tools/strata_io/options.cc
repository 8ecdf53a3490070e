#include "strata_io/options.h"

#include <getopt.h>

#include <cstdio>
#include <cstring>

#include "block/core/filename.h"
#include "block/core/graph.h"
#include "block/filters/copy_on_read.h"
#include "qmp/block_schema.h"

namespace strata::io {

namespace {

const char* kUsage =
    "Usage: strata-io [OPTIONS]... [-c STRING]... [file]\n"
    "Strata disk exerciser (qemu-io's options and commands)\n"
    "\n"
    "  --object OBJECTDEF   accepted and ignored\n"
    "  --image-opts         treat file as option string\n"
    "  -c, --cmd STRING     execute command with its arguments\n"
    "                       from the given string\n"
    "  -f, --format FMT     specifies the block driver to use\n"
    "  -r, --read-only      export read-only\n"
    "  -s, --snapshot       use snapshot file (not supported)\n"
    "  -n, --nocache        disable host cache, short for -t none\n"
    "  -C, --copy-on-read   enable copy-on-read\n"
    "  -m, --misalign       accepted and ignored\n"
    "  -k, --native-aio     accepted and ignored\n"
    "  -i, --aio=MODE       accepted (threads, native or io_uring) and ignored\n"
    "  -t, --cache=MODE     use the given cache mode for the image\n"
    "  -d, --discard=MODE   use the given discard mode for the image\n"
    "  -T, --trace OPTIONS  accepted and ignored\n"
    "  -U, --force-share    force shared permissions\n"
    "  -h, --help           display this help and exit\n"
    "  -V, --version        output version information and exit\n"
    "\n"
    "See 'strata-io -c help' for information on available commands.\n";

void error_report(const std::string& message) {
  std::fprintf(stderr, "strata-io: %s\n", message.c_str());
}

bool valid_cache(const std::string& c) {
  for (const char* ok : {"none", "off", "directsync", "writeback", "unsafe", "writethrough"}) {
    if (c == ok) return true;
  }
  return false;
}

// One option; false after an error message.
bool apply_option(int c, const char* arg, Options* o) {
  std::string a = arg ? arg : "";
  switch (c) {
    case 'c':
      o->commands.push_back(a);
      return true;
    case 'f':
      o->format = a;
      return true;
    case 'r':
      o->read_only = true;
      return true;
    case 'C':
      o->copy_on_read = true;
      return true;
    case 'U':
      o->force_share = true;
      return true;
    case 'n':
      o->cache = "none";
      return true;
    case 'm':
    case 'k':
    case 'T':
    case 0x100:
      return true;  // misalign, aio, trace, object
    case 0x101:
      o->image_opts = true;
      return true;
    case 's':
      error_report("-s (--snapshot) is not supported");
      return false;
    case 't':
      if (!valid_cache(a)) error_report("Invalid cache option: " + a);
      o->cache = a;
      return valid_cache(a);
    case 'd':
      if (a != "ignore" && a != "off" && a != "unmap" && a != "on") {
        error_report("Invalid discard option: " + a);
        return false;
      }
      o->discard = a;
      return true;
    case 'i':
      if (a != "threads" && a != "native" && a != "io_uring") {
        error_report("Invalid aio option: " + a);
        return false;
      }
      return true;
    default:
      std::printf("%s", kUsage);
      return false;
  }
}

// The node options for the image named on the command line.
Task<Result<nlohmann::json>> co_node_options(Engine& engine, const Options& o) {
  nlohmann::json opts;
  if (o.image_opts) {
    STRATA_CO_TRY_ASSIGN(opts, qmp::parse_image_options(engine.graph().drivers(), o.image));
  } else {
    STRATA_CO_TRY_ASSIGN(opts, co_await co_filename_options(engine.loop(), engine.graph().drivers(),
                                                            o.image, o.format));
  }
  opts["discard"] = o.discard;
  if (o.cache == "none" || o.cache == "off" || o.cache == "directsync") {
    opts["cache"] = {{"direct", true}};
  } else if (o.cache == "unsafe") {
    opts["cache"] = {{"no-flush", true}};
  }
  if (o.force_share) opts["force-share"] = true;
  co_return opts;
}

Task<Result<std::unique_ptr<Drive>>> co_open_drive(Engine& engine, Options o) {
  if (o.copy_on_read && o.read_only) {
    co_return Error{EINVAL, "Can't use copy-on-read on read-only device"};
  }
  STRATA_CO_TRY_ASSIGN(nlohmann::json opts, co_await co_node_options(engine, o));
  DriveOptions d;
  d.writable = !o.read_only;
  d.share_rw = o.force_share;
  d.user = "strata-io";
  STRATA_CO_TRY_ASSIGN(auto drive, co_await Drive::co_open(engine, opts, d));
  if (o.copy_on_read) {
    Node* image = drive->edge()->node();
    CopyOnReadOptions cor;  // named: GCC 12 destroys a temporary argument twice
    auto filter = co_await co_insert_copy_on_read(engine.graph(), *image, cor);
    if (!filter) {
      co_await drive->co_close();
      co_return std::move(filter).error();
    }
  }
  co_return drive;
}

}  // namespace

std::optional<int> parse_options(int argc, char** argv, Options* out) {
  static const struct option kLong[] = {
      {"help", no_argument, nullptr, 'h'},           {"version", no_argument, nullptr, 'V'},
      {"cmd", required_argument, nullptr, 'c'},      {"format", required_argument, nullptr, 'f'},
      {"read-only", no_argument, nullptr, 'r'},      {"snapshot", no_argument, nullptr, 's'},
      {"nocache", no_argument, nullptr, 'n'},        {"copy-on-read", no_argument, nullptr, 'C'},
      {"misalign", no_argument, nullptr, 'm'},       {"native-aio", no_argument, nullptr, 'k'},
      {"aio", required_argument, nullptr, 'i'},      {"discard", required_argument, nullptr, 'd'},
      {"cache", required_argument, nullptr, 't'},    {"trace", required_argument, nullptr, 'T'},
      {"object", required_argument, nullptr, 0x100}, {"image-opts", no_argument, nullptr, 0x101},
      {"force-share", no_argument, nullptr, 'U'},    {nullptr, 0, nullptr, 0}};
  for (int c; (c = getopt_long(argc, argv, "hVc:d:f:rsnCmki:t:T:U", kLong, nullptr)) != -1;) {
    if (c == 'h') {
      std::printf("%s", kUsage);
      return 0;
    }
    if (c == 'V') {
      std::printf("strata-io version %s\n", STRATA_VERSION);
      return 0;
    }
    if (!apply_option(c, optarg, out)) return 1;
  }
  if (argc - optind > 1) {
    std::printf("%s", kUsage);
    return 1;
  }
  if (optind < argc) out->image = argv[optind];
  if (out->image_opts && !out->format.empty()) {
    error_report("--image-opts and -f are mutually exclusive");
    return 1;
  }
  return std::nullopt;
}

Task<Result<std::unique_ptr<Drive>>> co_open_image(Engine& engine, Options o) {
  auto drive = co_await co_open_drive(engine, o);
  if (drive) co_return drive;
  std::string what = o.image_opts ? "can't open: " : "can't open device " + o.image + ": ";
  co_return Error{drive.error().code, what + drive.error().message};
}

bool is_writethrough(const std::string& cache) {
  return cache == "writethrough" || cache == "directsync";
}

}  // namespace strata::io
