// The new image of strata-img create and convert: its -o options (typed
// by CreateOptionSet, create_opts.h) turned into the creation's options,
// its backing file, checked the same way, and its creation, which takes
// QEMU's image locks on the file before emptying it
// (block/drivers/file_create.h). Whatever fails before the creation starts
// leaves an existing file byte for byte as it was.
// Thread rules: the tool's loop only.
#pragma once

#include <string>

#include "block/drivers/qcow2/create.h"
#include "strata_img/common.h"
#include "strata_img/create_opts.h"

namespace strata::img {

// The creation options of a new image of `format` ("qcow2" or "raw") from
// a type-checked option set: the size (rounded up to whole sectors, as
// qemu-img), the file protocol's hints and, for qcow2, its own options,
// checked as qcow2_co_create checks them (qcow2::validate_create_options).
// Errors carry QEMU's messages, without the tool's prefixes.
Result<qcow2::CreateOptions> parse_create_options(const std::string& format,
                                                  const CreateOptionSet& set);

// Opens the backing file a new image at `image` is to name (a relative
// name is relative to the image's directory), shared as qemu-img opens it,
// and returns its size and format (probed when `format` is empty). Errors
// are the open's, without the tool's "Could not open 'NAME': " prefix.
struct BackingInfo {
  uint64_t size = 0;
  std::string format;
};
Task<Result<BackingInfo>> co_backing_info(Engine& engine, std::string path, std::string format,
                                          const std::string& image);

// Creates `filename` as an empty image of `format` ("qcow2" or "raw").
Task<Result<void>> co_create_new_image(Engine& engine, const std::string& format,
                                       const std::string& filename,
                                       const qcow2::CreateOptions& options);

}  // namespace strata::img
