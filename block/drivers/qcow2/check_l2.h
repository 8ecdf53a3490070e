// The checks of one L2 entry that need no refcounts, for check.cc (as in
// QEMU's check_refcounts_l2): reserved bits, compressed clusters in an image
// with an external data file or with a subcluster bitmap, and subcluster
// bitmaps that contradict the entry.
// Thread rules: pure functions.
#pragma once

#include <string>
#include <vector>

#include "block/drivers/qcow2/l2_entry.h"

namespace strata::qcow2 {

struct EntryCheck {
  std::vector<std::string> errors;  // one corruption each, worded as qemu-img
  bool counted = true;              // false: the entry's clusters are not referenced
};

EntryCheck check_l2_entry(const L2Format& fmt, uint64_t index, const L2Entry& e);

}  // namespace strata::qcow2
