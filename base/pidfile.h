// PidFile: a daemon's pid file, written as QEMU's tools write theirs.
//
// Contract: create() opens (creating it with mode 0600) and write-locks the
// file with an fcntl lock, makes sure the file it locked is still the one at
// `path` (another daemon may have removed or replaced it meanwhile; then it
// starts over), and writes "PID\n" over any old content. While the PidFile
// lives the lock is held, so a second daemon given the same path fails with
// QEMU's message ("Cannot lock pid file: Resource temporarily unavailable")
// instead of overwriting it. Other errors carry QEMU's messages too ("Could
// not create 'PATH': ...", "Failed to write pid file"). remove() unlinks the
// file and releases the lock; destroying a PidFile releases the lock and
// leaves the file.
// Thread rules: a plain object; call create() before starting threads that
// fork.
#pragma once

#include <string>

#include "strata/result.h"

namespace strata {

class PidFile {
 public:
  static Result<PidFile> create(const std::string& path);

  PidFile() = default;
  PidFile(PidFile&& other) noexcept;
  PidFile& operator=(PidFile&& other) noexcept;
  PidFile(const PidFile&) = delete;
  PidFile& operator=(const PidFile&) = delete;
  ~PidFile();

  bool active() const { return fd_ >= 0; }
  const std::string& path() const { return path_; }
  void remove();

 private:
  PidFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  void release();

  std::string path_;
  int fd_ = -1;
};

}  // namespace strata
