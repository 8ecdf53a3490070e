// Consistency check and repair of a qcow2 image (qemu-img check).
//
// Contract: co_check() counts every reference to every host cluster (header,
// L1/L2 tables and data of the active state and of every snapshot, the
// snapshot table, refcount structures, bitmap directory, tables and data),
// compares the counts with the stored refcounts and checks the COPIED flags
// of the active tables. Refcounts above the reference count are leaks,
// below it corruptions. With kFixLeaks / kFixErrors the image (opened
// writable) is repaired and checked again; the result then describes the
// image after repair plus what was fixed. Problems are reported as lines in
// `messages`, worded as qemu-img prints them.
// Thread rules: loop-thread only; nothing else may use the node meanwhile.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "block/drivers/qcow2/qcow2.h"

namespace strata::qcow2 {

enum CheckFix : int { kFixLeaks = 1, kFixErrors = 2 };

struct CheckResult {
  int64_t corruptions = 0;
  int64_t leaks = 0;
  int64_t check_errors = 0;
  int64_t corruptions_fixed = 0;
  int64_t leaks_fixed = 0;
  uint64_t image_end_offset = 0;
  uint64_t total_clusters = 0;
  uint64_t allocated_clusters = 0;
  uint64_t fragmented_clusters = 0;
  uint64_t compressed_clusters = 0;
  std::vector<std::string> messages;
};

Task<Result<CheckResult>> co_check(Qcow2Driver& driver, int fix);

}  // namespace strata::qcow2
