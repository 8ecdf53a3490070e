#include "block/drivers/file_create.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include "base/fs.h"
#include "block/core/image_lock.h"
#include "block/core/perm.h"

namespace strata {

namespace {

// What creating holds: it writes and resizes, and lets nobody else resize
// (the file must have the size asked for when creation returns).
constexpr uint64_t kCreatePerm = kPermWrite | kPermResize;
constexpr uint64_t kCreateShared = kPermAll & ~kPermResize;

Error os_error(const std::string& what, const Error& e) {
  return Error{e.code, what + ": " + std::strerror(e.code)};
}

Task<Result<void>> co_fill_zeroes(Loop& loop, int fd, uint64_t size) {
  std::vector<uint8_t> zeroes(1 << 20, 0);
  for (uint64_t off = 0; off < size;) {
    uint64_t n = std::min<uint64_t>(zeroes.size(), size - off);
    auto r = co_await fs::co_pwritev(loop, fd, IoVec(zeroes.data(), n), off);
    if (!r) co_return std::move(r).error();
    off += n;
  }
  co_return Result<void>{};
}

// QEMU's allocate_first_block: a new file's first block is written so that
// alignment probes find it allocated; failures do not matter. Never past
// `size`.
Task<void> co_allocate_first_block(Loop& loop, int fd, uint64_t size) {
  std::vector<uint8_t> zeroes(std::min<uint64_t>(size < 4096 ? 512 : 4096, size), 0);
  (void)co_await fs::co_pwritev(loop, fd, IoVec(zeroes.data(), zeroes.size()), 0);
}

Task<Result<void>> co_size(Loop& loop, int fd, uint64_t size, Preallocation prealloc) {
  auto r = Result<void>{};
  if (r && size && prealloc == Preallocation::kFull) {
    r = co_await co_fill_zeroes(loop, fd, size);
    if (!r) co_return os_error("Could not preallocate new data", r.error());
  }
  if (r && size && prealloc == Preallocation::kFalloc) {
    r = co_await fs::co_allocate(loop, fd, 0, size);
    if (!r) co_return os_error("Could not preallocate new data", r.error());
  }
  if (r) r = co_await fs::co_ftruncate(loop, fd, size);
  if (!r) co_return os_error("Could not resize file", r.error());
  if (size && prealloc != Preallocation::kFull) co_await co_allocate_first_block(loop, fd, size);
  co_return Result<void>{};
}

}  // namespace

void apply_file_hints(int fd, const FileHints& hints) {
  if (hints.nocow) {
    int attr = 0;
    if (ioctl(fd, FS_IOC_GETFLAGS, &attr) == 0) {
      attr |= FS_NOCOW_FL;
      (void)ioctl(fd, FS_IOC_SETFLAGS, &attr);
    }
  }
  struct fsxattr attr;
  int r = ioctl(fd, FS_IOC_FSGETXATTR, &attr);
  if (r == 0) {
    attr.fsx_xflags |= FS_XFLAG_EXTSIZE;
    attr.fsx_extsize = uint32_t(hints.extent_size_hint);
    r = ioctl(fd, FS_IOC_FSSETXATTR, &attr);
  }
  if (r < 0 && hints.extent_size_hint_given && hints.extent_size_hint) {
    std::fprintf(stderr, "warning: Failed to set extent size hint: %s\n", std::strerror(errno));
  }
}

Task<Result<int>> co_open_for_create(Loop& loop, std::string path) {
  auto fd = co_await fs::co_open(loop, path, O_RDWR | O_CREAT, 0644);
  if (!fd) co_return os_error("Could not create '" + path + "'", fd.error());
  // As QEMU: take the bytes first, then look for other holders, so two
  // creators racing each other both see the other's lock.
  auto r = ImageLock::apply(*fd, kCreatePerm, kCreateShared);
  if (r) r = ImageLock::test(*fd, kCreatePerm, kCreateShared, path);
  if (!r) {
    (void)co_await fs::co_close(loop, *fd);
    co_return std::move(r).error();
  }
  co_return *fd;
}

Task<Result<void>> co_create_file(Loop& loop, std::string path, uint64_t size,
                                  Preallocation prealloc, const FileHints& hints) {
  if (prealloc == Preallocation::kMetadata) {
    co_return Error{ENOTSUP, "Unsupported preallocation mode: metadata"};
  }
  if (hints.extent_size_hint > UINT32_MAX) {
    co_return Error{EINVAL, "Extent size hint is too large"};
  }
  if (size > static_cast<uint64_t>(INT64_MAX)) {
    co_return Error{EINVAL, "Could not resize file: Invalid argument"};
  }
  STRATA_CO_TRY_ASSIGN(int fd, co_await co_open_for_create(loop, path));
  auto r = co_await fs::co_ftruncate(loop, fd, 0);
  if (!r) r = os_error("Could not resize file", r.error());
  if (r) apply_file_hints(fd, hints);
  if (r) r = co_await co_size(loop, fd, size, prealloc);
  (void)co_await fs::co_close(loop, fd);
  co_return r;
}

}  // namespace strata
