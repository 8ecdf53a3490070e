// Command line of strata-nbd: qemu-nbd's flags for serving one image.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "strata/result.h"

namespace strata::tools::nbd_tool {

// One --object TYPE,id=ID,key=value,... or --object '{"qom-type": ...}'.
struct ObjectSpec {
  std::string type;
  std::map<std::string, std::string> props;  // scalars, as strings
  nlohmann::json json;                       // every property (JSON form: lists too)
};

struct Options {
  std::string format;  // empty: probe
  bool read_only = false;
  bool persistent = false;
  std::string socket_path;
  uint16_t port = 10809;
  std::string bind = "0.0.0.0";
  int shared = 1;
  std::string export_name;
  std::string description;
  std::vector<std::string> bitmaps;
  bool allocation_depth = false;
  std::string tls_creds;
  std::vector<ObjectSpec> objects;
  bool fork = false;
  std::string pid_file;
  std::string cache;    // none, writeback, directsync, writethrough, unsafe (-n: none)
  std::string aio;      // threads, native, io_uring: accepted, see docs
  std::string discard;  // ignore, unmap
  std::string detect_zeroes;
  bool image_opts = false;  // the image is given as blockdev options
  std::string tls_authz;    // id of an authz-* object
  std::string trace;        // -T: [enable=]PATTERN[,events=FILE][,file=FILE]
  bool list = false;        // -L: list the exports of a server
  bool bind_set = false;
  bool verbose = false;
  std::string image;
  bool help = false;
  bool version = false;
};

// Errors of parse_options() that qemu-nbd follows with a pointer to
// --help: on a line of its own ("Try `strata-nbd --help' ..."), or with
// the program name before it (after getopt's own messages).
constexpr int kErrorTryHelp = 0x10000;
constexpr int kErrorTryHelpPrefixed = 0x10001;
Result<Options> parse_options(int argc, char** argv);
Result<ObjectSpec> parse_object(const std::string& text);
const char* usage();

}  // namespace strata::tools::nbd_tool
