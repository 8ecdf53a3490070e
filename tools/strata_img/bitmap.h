// strata-img's bitmap handling: the `bitmap` subcommand and the helpers
// `convert --bitmaps [--skip-broken-bitmaps]` calls (qemu-img's
// convert_check_bitmaps and convert_copy_bitmaps).
// Thread rules: the tool's loop only.
#pragma once

#include "strata_img/common.h"

namespace strata::img {

int cmd_bitmap(Engine& engine, const Args& args);

// Before the target exists: can the source's persistent bitmaps be copied?
// Prints qemu-img's message and returns false if not.
bool check_convert_bitmaps(Node& src, bool skip_broken);
// Once the target is open: does its format store bitmaps? (prints the message)
bool target_takes_bitmaps(Node& dst);
// After the data is copied: every persistent bitmap of `src` (inconsistent
// ones skipped with a warning when `skip_broken`) is added to `dst` with its
// granularity and enabled state, filled from the source, and stored.
Task<bool> co_copy_convert_bitmaps(Engine& engine, Node& src, Node& dst, bool skip_broken);

}  // namespace strata::img
