#include "block/core/image_lock.h"

#include <fcntl.h>

#include <cerrno>
#include <cstring>

#include "block/core/perm.h"

namespace strata {

namespace {
// Is byte `offset` read-locked by another open file description?
Result<bool> locked_by_other(int fd, uint64_t offset) {
  struct flock fl {};
  fl.l_whence = SEEK_SET;
  fl.l_start = static_cast<off_t>(offset);
  fl.l_len = 1;
  fl.l_type = F_WRLCK;
  if (fcntl(fd, F_OFD_GETLK, &fl) == -1) {
    return Error{errno, std::string("Failed to test lock: ") + std::strerror(errno)};
  }
  return fl.l_type != F_UNLCK;
}

Result<void> set_byte(int fd, uint64_t offset, bool locked) {
  struct flock fl {};
  fl.l_whence = SEEK_SET;
  fl.l_start = static_cast<off_t>(offset);
  fl.l_len = 1;
  fl.l_type = locked ? F_RDLCK : F_UNLCK;
  if (fcntl(fd, F_OFD_SETLK, &fl) == -1) {
    return Error{errno, std::string("Failed to lock byte ") + std::to_string(offset) + ": " +
                            std::strerror(errno)};
  }
  return {};
}
}  // namespace

Result<void> ImageLock::test(int fd, uint64_t perm, uint64_t shared, const std::string& filename) {
  for (int i = 0; i < kPermCount; i++) {
    uint64_t bit = 1ull << i;
    if (perm & bit) {
      STRATA_TRY_ASSIGN(bool held, locked_by_other(fd, kSharedBase + i));
      if (held) {
        return Error{EAGAIN, std::string("Failed to get \"") + perm_name(i) +
                                 "\" lock: Is another process using the image [" + filename + "]?"};
      }
    }
    if (!(shared & bit)) {
      STRATA_TRY_ASSIGN(bool held, locked_by_other(fd, kPermBase + i));
      if (held) {
        return Error{EAGAIN, std::string("Failed to get shared \"") + perm_name(i) +
                                 "\" lock: Is another process using the image [" + filename + "]?"};
      }
    }
  }
  return {};
}

Result<void> ImageLock::apply(int fd, uint64_t perm, uint64_t shared) {
  for (int i = 0; i < kPermCount; i++) {
    uint64_t bit = 1ull << i;
    STRATA_TRY(set_byte(fd, kPermBase + i, perm & bit));
    STRATA_TRY(set_byte(fd, kSharedBase + i, !(shared & bit)));
  }
  return {};
}

}  // namespace strata
