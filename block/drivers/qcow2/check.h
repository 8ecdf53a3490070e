// Consistency check and repair of a qcow2 image (qemu-img check), following
// QEMU's qcow2_co_check_locked step by step.
//
// Contract: co_check() reads the snapshot table as a check does (entries
// that cannot be kept are cut down with kFixErrors), counts every
// reference to every host cluster (header, L1/L2 tables and data of the
// active state and of every snapshot, the snapshot table, refcount
// structures, bitmap directory, tables and data; check_walk.h), compares
// the counts with the stored refcounts and checks the COPIED flags of the
// active tables. Refcounts above the reference count are leaks, below it
// corruptions; references a cluster or more past the end of the file are
// corruptions (a truncated image). With kFixLeaks / kFixErrors the image
// (opened writable) is repaired as QEMU repairs it and checked again; the
// result then describes the image after repair plus what was fixed.
// Problems are reported as lines in `messages`, worded as qemu-img prints
// them; a failure that stops the check (qemu-img's "Check failed") is the
// errno in `aborted`, with what was found until then. An Error is returned
// only when the check could not start.
// Thread rules: loop-thread only; nothing else may use the node meanwhile.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "block/drivers/qcow2/qcow2.h"

namespace strata::qcow2 {

enum CheckFix : int { kFixLeaks = 1, kFixErrors = 2 };

// One line of the report. qemu-img prints most of them as they are and
// some (errors it reports through error_report) after its program name.
struct CheckMessage {
  CheckMessage(std::string t, bool tool = false) : text(std::move(t)), error_report(tool) {}
  CheckMessage(const char* t, bool tool = false) : text(t), error_report(tool) {}
  std::string text;
  bool error_report;
};

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
  int aborted = 0;  // errno that stopped the check, 0 if it completed
  std::vector<CheckMessage> messages;
};

Task<Result<CheckResult>> co_check(Qcow2Driver& driver, int fix);

}  // namespace strata::qcow2
