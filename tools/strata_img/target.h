// The new image of strata-img create and convert: its -o options, checked
// before anything is touched, its backing file, checked the same way, and
// its creation, which takes QEMU's image locks on the file before emptying
// it (block/drivers/file_create.h). Whatever fails before the creation
// starts leaves an existing file byte for byte as it was.
// Thread rules: the tool's loop only.
#pragma once

#include <map>
#include <string>

#include "block/drivers/qcow2/create.h"
#include "strata_img/common.h"

namespace strata::img {

// The syntax of qemu-img's -o options of a new image of `format` (qcow2's
// names; raw's size, preallocation, nocow, extent_size_hint): known keys,
// booleans, numbers and sizes (what qemu-img refuses while it parses the
// option string).
Result<void> check_create_option_syntax(const std::string& format,
                                        const std::map<std::string, std::string>& opts);
// The options themselves (the syntax checked first). Their values are
// checked by the creation (qcow2::validate_create_options), before the
// file is touched.
Result<qcow2::CreateOptions> parse_create_options(const std::string& format,
                                                  const std::map<std::string, std::string>& opts);

// Opens the backing file a new image at `image` is to name (a relative
// name is relative to the image's directory), shared as qemu-img opens it,
// and returns its size. Errors are the open's, without the tool's
// "Could not open 'NAME': " prefix.
Task<Result<uint64_t>> co_backing_size(Engine& engine, std::string path, std::string format,
                                       const std::string& image);

// Creates `filename` as an empty image of `format` ("qcow2" or "raw").
Task<Result<void>> co_create_new_image(Engine& engine, const std::string& format,
                                       const std::string& filename,
                                       const qcow2::CreateOptions& options);

}  // namespace strata::img
