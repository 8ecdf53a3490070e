// Overlay creation for blockdev-snapshot-sync (qcow2, as QEMU's default).
#include "block/drivers/qcow2/create.h"
#include "qmp/snapshot.h"

namespace strata::qmp {

Task<Result<void>> co_create_overlay_image(Engine& engine, std::string path, std::string format,
                                           Node& backing) {
  if (format != "qcow2") {
    co_return Error{ENOTSUP, "Creating '" + format +
                                 "' overlays is not supported; create the image first and use "
                                 "mode 'existing'"};
  }
  qcow2::CreateOptions options;
  options.size = backing.size();
  options.backing_file = backing.driver().filename();
  options.backing_format = backing.driver_name();
  co_return co_await qcow2::co_create_image(engine, std::move(path), std::move(options));
}

}  // namespace strata::qmp
