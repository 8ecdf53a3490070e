// CreateJob: blockdev-create as a job (QEMU's blockdev_create_run), type
// "create". It creates a `file` or `qcow2` image from validated
// BlockdevCreateOptions; every failure (a missing node, bad qcow2 options,
// an I/O error) ends the job with that error, reported by query-jobs, as
// QEMU does. Progress is 0/1 while it runs and 1/1 after.
//
// A qcow2 image is written to the file behind its `file` option: an
// existing `file` node (directly or below raw/filters) named by reference,
// or an existing file given inline. While it is written, the job holds
// write and resize permissions on that node, so a node in use by a format
// (whose image would be destroyed under it) is refused as in QEMU.
//
// Like QEMU's, the job is created with auto-dismiss off: it stays
// concluded until job-dismiss.
// Thread rules: loop-thread only.
#pragma once

#include <nlohmann/json.hpp>

#include "jobs/job.h"

namespace strata {

class CreateJob : public Job {
 public:
  CreateJob(Engine& engine, std::string id, nlohmann::json options);
  std::string_view type() const override { return "create"; }
  Task<Result<void>> co_run() override;

 private:
  nlohmann::json options_;
};

}  // namespace strata
