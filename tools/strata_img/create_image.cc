#include "strata_img/create_image.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstring>

#include "base/fs.h"
#include "strata_img/common.h"

namespace strata::img {

namespace {

// QEMU's file protocol hints, before any data: copy-on-write off (btrfs)
// and an extent size hint (XFS); failures do not matter, a hint given
// explicitly that cannot be set is warned about.
void apply_file_hints(int fd, const CreateOptionSet& o) {
  if (o.flag("nocow", false)) {
    int attr = 0;
    if (ioctl(fd, FS_IOC_GETFLAGS, &attr) == 0) {
      attr |= FS_NOCOW_FL;
      ioctl(fd, FS_IOC_SETFLAGS, &attr);
    }
  }
  uint64_t hint = o.number("extent_size_hint", 1 << 20);
  struct fsxattr attr;
  int r = ioctl(fd, FS_IOC_FSGETXATTR, &attr);
  if (r == 0) {
    attr.fsx_xflags |= FS_XFLAG_EXTSIZE;
    attr.fsx_extsize = uint32_t(hint);
    r = ioctl(fd, FS_IOC_FSSETXATTR, &attr);
  }
  if (r < 0 && o.has("extent_size_hint") && hint) {
    error_report(std::string("warning: Failed to set extent size hint: ") + strerror(errno));
  }
}

// Writes zeroes over [from, to) (preallocation=full).
Task<Result<void>> co_write_zeroes(Loop& loop, int fd, uint64_t from, uint64_t to) {
  std::vector<uint8_t> zeroes(std::min<uint64_t>(to - from, 1 << 20));
  for (uint64_t off = from; off < to;) {
    uint64_t n = std::min<uint64_t>(zeroes.size(), to - off);
    STRATA_CO_TRY(co_await fs::co_pwritev(loop, fd, IoVec(zeroes.data(), n), off));
    off += n;
  }
  co_return co_await fs::co_fdatasync(loop, fd);
}

// A raw image as QEMU's file protocol makes one: empty, hinted, resized,
// then falloc'd, zero-filled, or (without preallocation) its first block
// written so that alignment probes find it allocated.
Task<Result<void>> co_create_raw(Engine& engine, std::string path, uint64_t size,
                                 Preallocation prealloc, const CreateOptionSet& o) {
  Loop& loop = engine.loop();
  STRATA_CO_TRY_ASSIGN(int fd, co_await fs::co_open(loop, path, O_RDWR | O_CREAT | O_TRUNC));
  apply_file_hints(fd, o);
  auto r = co_await fs::co_ftruncate(loop, fd, size);
  if (r && size && prealloc == Preallocation::kFalloc) {
    r = co_await fs::co_allocate(loop, fd, 0, size);
  } else if (r && size && prealloc == Preallocation::kFull) {
    r = co_await co_write_zeroes(loop, fd, 0, size);
  } else if (r && size) {
    std::vector<uint8_t> zeroes(size < 4096 ? 512 : 4096);
    (void)co_await fs::co_pwritev(loop, fd, IoVec(zeroes.data(), zeroes.size()), 0);
  }
  (void)co_await fs::co_close(loop, fd);
  co_return r;
}

// The format's own checks, made after the Formatting line as in qemu-img.
}  // namespace

Result<qcow2::CreateOptions> qcow2_create_options(const CreateOptionSet& o) {
  qcow2::CreateOptions q;
  q.size = (o.number("size", 0) + 511) / 512 * 512;
  q.cluster_size = o.number("cluster_size", 65536);
  q.refcount_bits = uint32_t(std::min<uint64_t>(o.number("refcount_bits", 16), UINT32_MAX));
  q.lazy_refcounts = o.flag("lazy_refcounts", false);
  q.backing_file = o.get("backing_file");
  q.backing_format = o.get("backing_fmt");
  if (o.has("compat")) {
    auto v = qcow2::parse_compat(o.get("compat"));
    if (!v)
      return Error{EINVAL, "Parameter 'version' does not accept value '" + o.get("compat") + "'"};
    q.version = *v;
  }
  if (o.has("preallocation") && !parse_preallocation(o.get("preallocation"), &q.preallocation)) {
    return Error{
        EINVAL, "Parameter 'preallocation' does not accept value '" + o.get("preallocation") + "'"};
  }
  std::string ct = o.get("compression_type");
  if (!ct.empty() && ct != "zlib") {
    if (ct != "zstd") {
      return Error{EINVAL, "Parameter 'compression-type' does not accept value '" + ct + "'"};
    }
    return Error{ENOTSUP, "Compression type 'zstd' is not supported"};
  }
  if (o.flag("extended_l2", false)) return Error{ENOTSUP, "Extended L2 entries are not supported"};
  STRATA_TRY(qcow2::validate_create_options(q));
  return q;
}

namespace {

Result<Preallocation> raw_preallocation(const CreateOptionSet& o) {
  Preallocation p = Preallocation::kOff;
  std::string v = o.get("preallocation");
  if (!v.empty() && !parse_preallocation(v, &p)) {
    return Error{EINVAL, "Parameter 'preallocation' does not accept value '" + v + "'"};
  }
  if (p == Preallocation::kMetadata) {
    return Error{ENOTSUP, "Unsupported preallocation mode: metadata"};
  }
  return p;
}

}  // namespace

Task<Result<void>> co_create_image_file(Engine& engine, const std::string& format,
                                        const std::string& filename, const CreateOptionSet& o) {
  if (format == "qcow2") {
    STRATA_CO_TRY_ASSIGN(auto q, qcow2_create_options(o));
    q.prepare_file = [&o](int fd) { apply_file_hints(fd, o); };
    co_return co_await qcow2::co_create_image(engine, filename, q);
  }
  STRATA_CO_TRY_ASSIGN(Preallocation p, raw_preallocation(o));
  uint64_t size = (o.number("size", 0) + 511) / 512 * 512;
  co_return co_await co_create_raw(engine, filename, size, p, o);
}

}  // namespace strata::img
