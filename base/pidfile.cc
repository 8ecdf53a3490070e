// Pid files with QEMU's create, lock, check, truncate and write sequence.
#include "base/pidfile.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace strata {

namespace {

Error errno_message(int err, const std::string& what) {
  return Error{err, what + ": " + std::strerror(err)};
}

bool write_all(int fd, const std::string& text) {
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// Opens and locks `path`; returns the descriptor once the locked file is
// the one the path names, -1 to try again (it was removed or replaced
// between the open and the lock), or an error.
Result<int> open_locked(const std::string& path) {
  int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, S_IRUSR | S_IWUSR);
  if (fd < 0) return errno_message(errno, "Could not create '" + path + "'");
  struct stat opened {};
  struct stat named {};
  struct flock lock {};
  lock.l_type = F_WRLCK;
  lock.l_whence = SEEK_SET;
  Result<int> out = fd;
  if (::fstat(fd, &opened) != 0) {
    out = errno_message(errno, "Cannot stat file");
  } else if (::fcntl(fd, F_SETLK, &lock) != 0) {
    out = errno_message(errno, "Cannot lock pid file");
  } else if (::stat(path.c_str(), &named) != 0 || named.st_ino != opened.st_ino ||
             named.st_dev != opened.st_dev) {
    out = -1;
  }
  if (!out || *out < 0) ::close(fd);
  return out;
}

}  // namespace

Result<PidFile> PidFile::create(const std::string& path) {
  int fd = -1;
  while (fd < 0) {
    STRATA_TRY_ASSIGN(fd, open_locked(path));
  }
  Error failure{0, ""};
  if (::ftruncate(fd, 0) != 0) {
    failure = errno_message(errno, "Failed to truncate pid file");
  } else if (!write_all(fd, std::to_string(::getpid()) + "\n")) {
    failure = Error{errno ? errno : EIO, "Failed to write pid file"};
  }
  if (failure.code != 0) {
    ::unlink(path.c_str());
    ::close(fd);
    return failure;
  }
  return PidFile(path, fd);
}

PidFile::PidFile(PidFile&& other) noexcept
    : path_(std::move(other.path_)), fd_(std::exchange(other.fd_, -1)) {}

PidFile& PidFile::operator=(PidFile&& other) noexcept {
  if (this != &other) {
    release();
    path_ = std::move(other.path_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

PidFile::~PidFile() {
  release();
}

void PidFile::remove() {
  if (fd_ < 0) return;
  ::unlink(path_.c_str());
  release();
}

void PidFile::release() {
  if (fd_ >= 0) ::close(std::exchange(fd_, -1));
}

}  // namespace strata
