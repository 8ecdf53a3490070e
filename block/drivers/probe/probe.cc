// Probing an image file: read its head (and last sector), apply the rules.
#include "block/drivers/probe/probe.h"

#include <fcntl.h>
#include <sys/stat.h>

#include "base/fs.h"

namespace strata::probe {

namespace {

// Reads `len` bytes at `offset` (zero-filled past the end of the file).
Task<Result<std::vector<uint8_t>>> co_read(Loop& loop, int fd, uint64_t offset, size_t len) {
  std::vector<uint8_t> buf(len, 0);
  STRATA_CO_TRY(co_await fs::co_preadv(loop, fd, IoVec(buf.data(), buf.size()), offset));
  co_return buf;
}

Task<Result<std::string>> co_probe_fd(Loop& loop, int fd, std::string path) {
  STRATA_CO_TRY_ASSIGN(auto st, co_await fs::co_fstat(loop, fd));
  if (S_ISDIR(st.st_mode)) {
    co_return Error{EISDIR, "Could not open '" + path + "': 'file' driver requires '" + path +
                                "' to be a regular file"};
  }
  uint64_t size = S_ISREG(st.st_mode) ? uint64_t(st.st_size) : 0;
  if (S_ISREG(st.st_mode) && size == 0) co_return std::string("raw");
  auto head = co_await co_read(loop, fd, 0, kHeadBytes);
  if (!head) {
    co_return Error{head.error().code,
                    "Could not read image for determining its format: " + head.error().message};
  }
  std::string format = probe_head(*head, path);
  if (format != "raw" || size < 2 * kVhdFooterBytes) co_return format;
  // A fixed VHD has no header, only a footer in its last sector.
  auto tail = co_await co_read(loop, fd, size - kVhdFooterBytes, kVhdFooterBytes);
  if (!tail) {
    co_return Error{tail.error().code,
                    "Could not read image for determining its format: " + tail.error().message};
  }
  co_return std::string(is_vhd_footer(*tail) ? "vpc" : "raw");
}

}  // namespace

Task<Result<std::string>> co_probe_file(Loop& loop, std::string path) {
  auto fd = co_await fs::co_open(loop, path, O_RDONLY);
  if (!fd) co_return Error{fd.error().code, "Could not open '" + path + "': " + fd.error().message};
  auto r = co_await co_probe_fd(loop, *fd, path);
  (void)co_await fs::co_close(loop, *fd);
  co_return r;
}

Task<Result<std::string>> co_probe_driver(Loop& loop, const DriverRegistry& drivers,
                                          std::string path) {
  STRATA_CO_TRY_ASSIGN(auto format, co_await co_probe_file(loop, path));
  const DriverSpec* spec = drivers.find(format);
  if (!spec || spec->kind != DriverKind::kFormat) co_return unsupported_format(path, format);
  co_return format;
}

}  // namespace strata::probe
