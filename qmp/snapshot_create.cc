// Overlay creation for blockdev-snapshot-sync (qcow2, as QEMU's default),
// drive-mirror's and drive-backup's new targets, and opening an image file
// for a command.
#include "block/core/filename.h"
#include "block/core/graph.h"
#include "block/drivers/file_create.h"
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

Task<Result<Node*>> co_open_image_node(Graph& graph, const std::string& file,
                                       const std::string& format, const std::string& name,
                                       bool with_backing, bool implicit) {
  // The file name as QEMU's bdrv_open reads it (nbd://..., json:, file:).
  STRATA_CO_TRY_ASSIGN(nlohmann::json file_options, filename_node_options(graph.drivers(), file));
  nlohmann::json options = {{"driver", format}, {"file", file_options}};
  if (!name.empty() || !implicit) options["node-name"] = name;
  const DriverSpec* spec = graph.drivers().find(format);
  if (!spec) co_return Error{EINVAL, "Unknown driver '" + format + "'"};
  for (const auto& o : spec->options) {
    // QEMU's BDRV_O_NO_BACKING.
    if (o.name == "backing" && !with_backing) options["backing"] = nullptr;
  }
  auto node = co_await graph.co_add(std::move(options), implicit && name.empty());
  if (!node) co_return std::move(node).error();
  (*node)->set_monitor_owned(false);  // as QEMU: not added by blockdev-add
  co_return *node;
}

Task<Result<void>> co_create_target_image(Engine& engine, const std::string& path,
                                          const std::string& format, uint64_t size, Node* backing) {
  if (format == "raw") {
    if (backing) co_return Error{EINVAL, "Backing file not supported for file format 'raw'"};
    co_return co_await co_create_file(engine.loop(), path, size, Preallocation::kOff);
  }
  if (!engine.graph().drivers().find(format)) {
    co_return Error{EINVAL, "Unknown file format '" + format + "'"};
  }
  if (format != "qcow2") {
    co_return Error{ENOTSUP, "Creating '" + format +
                                 "' images is not supported; create the image first and use "
                                 "mode 'existing'"};
  }
  qcow2::CreateOptions options;
  options.size = size;
  if (backing) {
    options.backing_file = backing->driver().filename();
    options.backing_format = backing->driver_name();
    if (options.backing_file == path) {
      co_return Error{EINVAL,
                      "Error: Trying to create an image with the same filename as the backing "
                      "file"};
    }
  }
  co_return co_await qcow2::co_create_image(engine, path, std::move(options));
}

}  // namespace strata::qmp
