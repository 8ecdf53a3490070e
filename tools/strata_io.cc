// strata-io: qemu-io for Strata's block layer. Same options, commands (with
// their one-letter aliases), flags, messages, output and exit status, as far
// as docs/tools/strata-io.md says; any image Strata opens, by any file name
// the block layer understands (nbd://..., json:{...}).
//
// Usage: strata-io [OPTIONS]... [-c STRING]... [file]
//   Commands come from -c options, in order, or else one per line on stdin
//   (each read after a "strata-io> " prompt, as qemu-io prompts). The exit
//   status is 1 if the image could not be opened or any command failed.
// Sources: tools/strata_io/ (options and opening, the command table, the
// read/write commands, the others, qemu-io's number and report formats).
#include <cstdio>
#include <iostream>

#include "strata_io/options.h"
#include "strata_io/session.h"

using namespace strata;

namespace {

// Runs the -c commands, or stdin's lines; true if all succeeded.
Task<bool> co_run_commands(io::Session& session, const std::vector<std::string>& commands) {
  bool ok = true;
  if (!commands.empty()) {
    for (const auto& c : commands) {
      bool r = co_await session.co_run(c);
      ok = r && ok;
      if (session.quit()) break;
    }
    co_return ok;
  }
  for (;;) {
    std::printf("strata-io> ");
    std::fflush(stdout);
    std::string line;
    if (!std::getline(std::cin, line)) break;
    bool r = co_await session.co_run(line);
    ok = r && ok;
    std::fflush(stdout);
    if (session.quit()) break;
  }
  co_return ok;
}

Task<int> co_main(Engine& engine, io::Options options) {
  std::unique_ptr<Drive> drive;
  if (!options.image.empty()) {
    auto opened = co_await io::co_open_image(engine, options);
    if (!opened) {
      std::fprintf(stderr, "strata-io: %s\n", opened.error().message.c_str());
      co_return 1;
    }
    drive = std::move(*opened);
  }
  io::Session session(engine, std::move(drive), io::is_writethrough(options.cache));
  bool ok = co_await co_run_commands(session, options.commands);
  co_await session.co_close();
  std::fflush(stdout);
  co_await engine.co_close_all();
  co_return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  io::Options options;
  if (auto done = io::parse_options(argc, argv, &options)) return *done;
  Engine engine;
  return engine.run(co_main(engine, options));
}
