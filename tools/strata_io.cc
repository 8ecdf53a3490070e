// strata-io: a small qemu-io-like tool that runs I/O commands against an
// image through Strata's block layer (any format Strata opens).
//
// Usage: strata-io [-f FMT] [-r] [-c CMD]... [--image-opts] IMAGE
//   Commands come from -c options, in order, or else one per line on stdin.
//   IMAGE is a file name; with --image-opts, blockdev options in QEMU's
//   keyval form (driver=qcow2,file.filename=x) or as a JSON object; or
//   "json:" and a JSON object of blockdev options.
// Commands (sizes accept k/M/G suffixes):
//   read  [-P BYTE] OFF LEN   read; with -P verify every byte equals BYTE
//   write [-P BYTE] OFF LEN   write LEN bytes of BYTE (default 0xcd)
//   write -z [-u] OFF LEN     write zeroes (-u: may unmap)
//   discard OFF LEN           discard
//   flush                     flush
//   truncate SIZE             resize the image
//   map                       print allocation extents
//   echo TEXT                 print TEXT (to mark progress when driven by a pipe)
//   quit                      stop
// Output follows qemu-io ("wrote 4096/4096 bytes at offset 0"); a failed
// command prints its error and makes the exit status 1.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "block/core/graph.h"
#include "block/core/options.h"
#include "block/drivers/probe/probe.h"
#include "qmp/block_schema.h"
#include "strata/drive.h"
#include "strata/engine.h"

using namespace strata;

namespace {

struct Args {
  std::string format;
  bool read_only = false;
  bool image_opts = false;
  std::vector<std::string> commands;
  std::string image;
};

std::vector<std::string> split_words(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

bool parse_number(const std::string& s, uint64_t* out) {
  if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    char* end = nullptr;
    *out = std::strtoull(s.c_str() + 2, &end, 16);
    return end && *end == 0;
  }
  return parse_size(s, out);
}

class Session {
 public:
  explicit Session(Drive& drive) : drive_(drive) {}

  // Returns false when the command failed.
  Task<bool> co_run(std::string line) {
    auto w = split_words(line);
    if (w.empty() || w[0][0] == '#') co_return true;
    std::string cmd = w[0];
    if (cmd == "echo") {
      std::printf("%s\n", line.size() > 5 ? line.substr(5).c_str() : "");
      co_return true;
    }
    bool zero = false, unmap = false;
    int pattern = -1;
    std::vector<std::string> pos;
    for (size_t i = 1; i < w.size(); i++) {
      if (w[i] == "-z") {
        zero = true;
      } else if (w[i] == "-u") {
        unmap = true;
      } else if (w[i] == "-P" && i + 1 < w.size()) {
        pattern = int(std::strtol(w[++i].c_str(), nullptr, 0));
      } else if (w[i] == "-q" || w[i] == "-v") {
      } else {
        pos.push_back(w[i]);
      }
    }
    uint64_t off = 0, len = 0;
    if (pos.size() >= 1 && !parse_number(pos[0], &off)) co_return fail("invalid offset " + pos[0]);
    if (pos.size() >= 2 && !parse_number(pos[1], &len)) co_return fail("invalid length " + pos[1]);
    if (cmd == "read") co_return co_await co_read(off, len, pattern);
    if (cmd == "write") co_return co_await co_write(off, len, pattern, zero, unmap);
    if (cmd == "discard" || cmd == "aio_discard") {
      co_return report(co_await drive_.co_discard(off, len), "discard", "discard", off, len);
    }
    if (cmd == "flush") co_return check(co_await drive_.co_flush(), "flush");
    if (cmd == "truncate") co_return check(co_await drive_.co_resize(off), "truncate");
    if (cmd == "map") co_return co_await co_map();

    co_return fail(cmd + ": unknown command");
  }

 private:
  bool fail(const std::string& msg) {
    std::printf("%s\n", msg.c_str());
    return false;
  }
  bool check(const Result<void>& r, const std::string& what) {
    if (!r) return fail(what + " failed: " + r.error().message);
    return true;
  }
  // qemu-io's lines: "COMMAND failed: ERROR" or "VERB LEN/LEN bytes at offset OFF".
  bool report(const Result<void>& r, const char* command, const char* verb, uint64_t off,
              uint64_t len) {
    if (!r) return fail(std::string(command) + " failed: " + r.error().message);
    std::printf("%s %llu/%llu bytes at offset %llu\n", verb, (unsigned long long)len,
                (unsigned long long)len, (unsigned long long)off);
    return true;
  }

  Task<bool> co_read(uint64_t off, uint64_t len, int pattern) {
    std::vector<uint8_t> buf(len);
    auto r = co_await drive_.co_read(off, buf);
    if (!r) co_return fail("read failed: " + r.error().message);
    if (pattern >= 0) {
      for (uint64_t i = 0; i < len; i++) {
        if (buf[i] != uint8_t(pattern)) {
          std::printf("Pattern verification failed at offset %llu, %llu bytes\n",
                      (unsigned long long)(off + i), (unsigned long long)len);
          co_return false;
        }
      }
    }
    co_return report(Result<void>{}, "read", "read", off, len);
  }

  Task<bool> co_write(uint64_t off, uint64_t len, int pattern, bool zero, bool unmap) {
    if (zero)
      co_return report(co_await drive_.co_write_zeroes(off, len, unmap), "write", "wrote", off,
                       len);
    std::vector<uint8_t> buf(len, uint8_t(pattern >= 0 ? pattern : 0xcd));
    co_return report(co_await drive_.co_write(off, buf), "write", "wrote", off, len);
  }

  Task<bool> co_map() {
    uint64_t size = drive_.size();
    for (uint64_t off = 0; off < size;) {
      auto e = co_await drive_.co_block_status(off, size - off);
      if (!e) co_return fail("map failed: " + e.error().message);
      std::printf("%llu %llu %s%s%s\n", (unsigned long long)off, (unsigned long long)e->length,
                  e->allocated ? "allocated" : "unallocated", e->data ? " data" : "",
                  e->zero ? " zero" : "");
      off += e->length;
    }
    co_return true;
  }

  Drive& drive_;
};

Task<int> co_main(Engine& engine, Args args) {
  nlohmann::json opts;
  if (args.image_opts) {
    auto parsed = qmp::parse_image_options(engine.graph().drivers(), args.image);
    if (!parsed) {
      std::fprintf(stderr, "strata-io: %s\n", parsed.error().message.c_str());
      co_return 1;
    }
    opts = std::move(*parsed);
  } else if (args.image.rfind("json:", 0) == 0) {
    opts = nlohmann::json::parse(args.image.substr(5), nullptr, false);
    if (opts.is_discarded()) {
      std::fprintf(stderr, "strata-io: invalid JSON options\n");
      co_return 1;
    }
  } else {
    std::string fmt = args.format;
    if (fmt.empty()) {
      auto probed =
          co_await probe::co_probe_driver(engine.loop(), engine.graph().drivers(), args.image);
      if (!probed) {
        std::fprintf(stderr, "strata-io: %s\n", probed.error().message.c_str());
        co_return 1;
      }
      fmt = *probed;
    }
    opts = {{"driver", fmt},
            {"discard", "unmap"},
            {"file", {{"driver", "file"}, {"filename", args.image}}}};
    if (args.format.empty() && fmt == "raw") opts["x-probed"] = true;
  }
  DriveOptions dopts;
  dopts.writable = !args.read_only;
  dopts.user = "strata-io";
  auto drive = co_await Drive::co_open(engine, opts, dopts);
  if (!drive) {
    std::fprintf(stderr, "strata-io: can't open device %s: %s\n", args.image.c_str(),
                 drive.error().message.c_str());
    co_return 1;
  }
  Session session(**drive);
  bool ok = true;
  if (!args.commands.empty()) {
    for (const auto& c : args.commands) ok = co_await session.co_run(c) && ok;
  } else {
    for (std::string line; std::getline(std::cin, line);) {
      if (line == "quit" || line == "q") break;
      ok = co_await session.co_run(line) && ok;
      std::fflush(stdout);
    }
  }
  std::fflush(stdout);
  co_await (*drive)->co_close();
  co_await engine.co_close_all();
  co_return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if ((a == "-f" || a == "--format") && i + 1 < argc) {
      args.format = argv[++i];
    } else if (a == "-c" && i + 1 < argc) {
      args.commands.push_back(argv[++i]);
    } else if (a == "-r" || a == "--read-only") {
      args.read_only = true;
    } else if (a == "--image-opts") {
      args.image_opts = true;
    } else if (a == "-h" || a == "--help") {
      std::printf("Usage: strata-io [-f FMT] [-r] [-c CMD]... [--image-opts] IMAGE\n");
      return 0;
    } else {
      args.image = a;
    }
  }
  if (args.image.empty()) {
    std::fprintf(stderr, "strata-io: no image given\n");
    return 1;
  }
  Engine engine;
  return engine.run(co_main(engine, args));
}
