// strata-io's command line: qemu-io's options, and opening the image they
// describe (file names through the block layer's filename rules, so
// nbd://, nbd+unix://, json: and file: work as in qemu-io; -C puts a
// copy-on-read filter above the image).
// Thread rules: parse_options is a plain function; co_open_image runs on
// the loop thread.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "strata/drive.h"
#include "strata/engine.h"

namespace strata::io {

struct Options {
  std::string format;
  bool read_only = false;
  bool image_opts = false;
  bool copy_on_read = false;
  bool force_share = false;
  std::string cache;              // -t / -n; empty: writeback
  std::string discard = "unmap";  // -d; qemu-io unmaps by default
  std::vector<std::string> commands;
  std::string image;  // empty: no image open
};

// Parses argv; returns an exit status when the program is done already
// (--help, --version, a usage error).
std::optional<int> parse_options(int argc, char** argv, Options* out);

// Opens the image as qemu-io's openfile does; errors carry qemu-io's text
// ("can't open device X: ...").
Task<Result<std::unique_ptr<Drive>>> co_open_image(Engine& engine, Options o);
// cache=writethrough and directsync: every write is FUA.
bool is_writethrough(const std::string& cache);

}  // namespace strata::io
