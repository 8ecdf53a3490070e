// Image locks with QEMU's byte layout, so QEMU and Strata honour each
// other: open-file-description (OFD) read locks on byte 100+i while holding
// permission i and on byte 200+i while refusing to share it.
//
// Contract: test() reports another process's conflicting lock as an error in
// QEMU's words; apply() makes the held bytes match exactly (locking and
// unlocking). Locks held by this same open file never conflict.
// Thread rules: plain syscalls on an fd; call from the loop thread (fcntl on
// locks never blocks with F_OFD_SETLK).
#pragma once

#include <cstdint>
#include <string>

#include "strata/result.h"

namespace strata {

class ImageLock {
 public:
  static constexpr uint64_t kPermBase = 100;
  static constexpr uint64_t kSharedBase = 200;

  // May this fd take `perm` and refuse to share everything outside `shared`?
  static Result<void> test(int fd, uint64_t perm, uint64_t shared, const std::string& filename);
  // Locks exactly the bytes for `perm` / `~shared` and unlocks the others.
  static Result<void> apply(int fd, uint64_t perm, uint64_t shared);
};

}  // namespace strata
