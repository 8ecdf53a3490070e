// Command line of strata-nbd: qemu-nbd's flags for serving one image.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "strata/result.h"

namespace strata::tools::nbd_tool {

// One --object TYPE,id=ID,key=value,...
struct ObjectSpec {
  std::string type;
  std::map<std::string, std::string> props;
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
  std::string cache;    // none, writeback, directsync, writethrough, unsafe
  std::string discard;  // ignore, unmap
  std::string detect_zeroes;
  bool verbose = false;
  std::string image;
  bool help = false;
  bool version = false;
};

Result<Options> parse_options(int argc, char** argv);
Result<ObjectSpec> parse_object(const std::string& text);
const char* usage();

}  // namespace strata::tools::nbd_tool
