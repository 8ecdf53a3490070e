#include "block/drivers/qcow2/probe.h"

#include <fcntl.h>

#include "base/fs.h"
#include "block/drivers/qcow2/format.h"

namespace strata::qcow2 {

Task<Result<std::string>> co_probe_format(Loop& loop, std::string path) {
  auto fd = co_await fs::co_open(loop, path, O_RDONLY);
  if (!fd) co_return Error{fd.error().code, "Could not open '" + path + "': " + fd.error().message};
  uint8_t buf[8] = {};
  auto r = co_await fs::co_preadv(loop, *fd, IoVec(buf, sizeof buf), 0);
  (void)co_await fs::co_close(loop, *fd);
  if (!r) co_return std::move(r).error();
  co_return std::string(load_be32(buf) == kMagic ? "qcow2" : "raw");
}

}  // namespace strata::qcow2
