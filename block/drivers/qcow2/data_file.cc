// qcow2: the external data file. An image with the data file feature keeps
// its guest data in a second file, at the guest offsets, without refcounts;
// the image file holds only metadata. The data file is the `data-file`
// child: given as an option (a node name or inline options, as QEMU's
// blockdev-add), or else the file named in the header, opened with the file
// protocol (a data file is never probed) under the name as written, so a
// relative name is relative to the working directory, as in QEMU 7.2.
// With x-no-data-file (strata-img info, like qemu-img info) it is not opened
// at all and guest data cannot be read.
#include "block/core/graph.h"
#include "block/drivers/qcow2/qcow2.h"

namespace strata::qcow2 {

Task<Result<void>> Qcow2Driver::co_open_data_file(OpenContext& ctx) {
  bool given = ctx.options().contains("data-file") && !ctx.options()["data-file"].is_null();
  if (!external_data()) {
    if (given) {
      co_return Error{EINVAL, "'data-file' can only be set for images with an external data file"};
    }
    if (header_.data_file_raw()) co_return Error{EINVAL, "data-file-raw requires a data file"};
    data_file_ = file_;
    co_return Result<void>{};
  }
  if (no_data_file_) co_return Result<void>{};
  if (given) {
    STRATA_CO_TRY_ASSIGN(data_file_, co_await ctx.co_open_child("data-file", kRoleData, true));
    co_return Result<void>{};
  }
  if (header_.data_file.empty()) co_return Error{EINVAL, "'data-file' is required for this image"};
  nlohmann::json opts = {{"driver", "file"}, {"filename", header_.data_file}};
  STRATA_CO_TRY_ASSIGN(data_file_, co_await ctx.co_open_child_with("data-file", opts, kRoleData));
  co_return Result<void>{};
}

}  // namespace strata::qcow2
