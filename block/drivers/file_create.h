// Creating an image file the way QEMU's file driver does (raw_co_create):
// the file is opened (created when missing, never truncated by the open),
// QEMU's lock bytes for "write" and "resize" are taken on it, sharing
// everything but resize, and checked against every other open file; only
// then is it emptied. A file another process uses (qemu-nbd serving it,
// a VM running on it, this process reading it as a convert source) is
// therefore refused and left byte for byte as it was.
//
// Contract: co_open_for_create() returns an fd holding those locks, or
// an error with the file untouched: QEMU's messages, "Could not create
// 'PATH': <strerror>" or "Failed to get "write" lock: Is another process
// using the image [PATH]?" (block/core/image_lock.h). Closing the fd drops
// the locks. co_create_file() does the whole file creation: open and lock,
// empty, the file hints, size with `prealloc` (off, falloc, full; the
// first block of a new file written, as QEMU does for alignment probes),
// close.
// Thread rules: loop-thread only.
#pragma once

#include <cstdint>
#include <string>

#include "base/loop.h"
#include "block/core/types.h"
#include "strata/result.h"
#include "strata/task.h"

namespace strata {

// QEMU's file protocol creation hints, set on the emptied file before any
// data: copy-on-write off (btrfs) and an extent size hint (XFS). Failures
// are ignored, except that an extent size hint given explicitly that
// cannot be set is warned about on stderr.
struct FileHints {
  bool nocow = false;
  uint64_t extent_size_hint = 1 << 20;
  bool extent_size_hint_given = false;
};

// Sets `hints` on `fd` (an open, empty file).
void apply_file_hints(int fd, const FileHints& hints);

Task<Result<int>> co_open_for_create(Loop& loop, std::string path);
Task<Result<void>> co_create_file(Loop& loop, std::string path, uint64_t size,
                                  Preallocation prealloc, const FileHints& hints = {});

}  // namespace strata
