// strata-io's command interpreter: qemu-io's command table (names, one-letter
// aliases, argument counts, usage lines), run on one open image.
//
// Contract: co_run() executes one command line as qemu-io does: the words
// are split at spaces, the command is found by name or alias ('command "x"
// not found' otherwise, on stderr), the argument count is checked ("bad
// argument count ..."), then the command parses its flags with getopt and
// prints qemu-io's output. A command's failure makes co_run() return false;
// "quit" ends the session. aio_read and aio_write run in the background
// until aio_flush, close or the end of the session.
// Thread rules: loop-thread only (one Session per process).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "base/sync.h"
#include "strata/drive.h"
#include "strata/engine.h"

namespace strata::io {

using Argv = std::vector<std::string>;

class Session;

struct Command {
  const char* name;
  const char* altname;  // or null
  int argmin;
  int argmax;        // -1: no limit
  bool needs_image;  // refused with "no file open, try 'help open'" without one
  const char* args;
  const char* oneline;
  const char* help;                               // extended help text for "help NAME", or null
  Task<int> (*run)(Session& session, Argv argv);  // 0 or a negative errno
};

// The commands, sorted by name; find_command() also matches aliases.
const std::vector<Command>& command_table();
const Command* find_command(const std::string& word);
// The commands of each file (rw.cc, misc.cc).
void add_rw_commands(std::vector<Command>& table);
void add_misc_commands(std::vector<Command>& table);
// "read [-abCqv] ... -- reads a number of bytes ..."; returns -EINVAL.
int command_usage(const Command& command);

class Session {
 public:
  Session(Engine& engine, std::unique_ptr<Drive> drive, bool writethrough);
  ~Session();

  Engine& engine() const { return engine_; }
  Drive* drive() const { return drive_.get(); }
  // cache=writethrough/directsync: writes are FUA.
  bool writethrough() const { return writethrough_; }

  Task<bool> co_run(std::string line);
  bool quit() const { return quit_; }
  void request_quit() { quit_ = true; }

  // A request running in the background (aio_read, aio_write).
  void spawn(Task<void> task) { aio_.spawn(std::move(task)); }
  // Waits for the background requests (aio_flush).
  Task<void> co_join() { return aio_.co_join(); }
  // Waits for the background requests, then closes the image.
  Task<void> co_close();

 private:
  Engine& engine_;
  std::unique_ptr<Drive> drive_;
  bool writethrough_;
  bool quit_ = false;
  TaskGroup aio_;
};

}  // namespace strata::io
