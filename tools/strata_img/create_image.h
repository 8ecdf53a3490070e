// Creating an image file from a CreateOptionSet (create_opts.h), for
// strata-img create and convert: the format's own checks (with QEMU's
// messages) come first, so a refused option leaves the file untouched;
// then the file is made as QEMU's file protocol makes it (copy-on-write
// and extent size hints, preallocation, the first block written).
// Thread rules: loop-thread only.
#pragma once

#include <string>

#include "block/drivers/qcow2/create.h"
#include "strata/engine.h"
#include "strata_img/create_opts.h"

namespace strata::img {

// The qcow2 creation options of a set, checked as qcow2_co_create does.
Result<qcow2::CreateOptions> qcow2_create_options(const CreateOptionSet& o);
// Creates `filename` in `format` ("qcow2" or "raw") of the set's size.
Task<Result<void>> co_create_image_file(Engine& engine, const std::string& format,
                                        const std::string& filename, const CreateOptionSet& o);

}  // namespace strata::img
