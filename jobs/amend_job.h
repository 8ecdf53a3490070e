// AmendJob: x-blockdev-amend as a job (QEMU's block/amend.c), type
// "amend". QEMU 7.2 amends qcow2 images only in their encryption (LUKS
// keyslots); Strata opens no encrypted image, so a qcow2 amend without
// `encrypt` succeeds having nothing to change, and one with `encrypt`
// fails with QEMU's "image is not encrypted, can't amend". The checks made
// before the job exists (node, driver) are the QMP command's.
// Auto-dismiss is off, as in QEMU.
// Thread rules: loop-thread only.
#pragma once

#include <nlohmann/json.hpp>

#include "jobs/job.h"

namespace strata {

class Node;

class AmendJob : public Job {
 public:
  AmendJob(Engine& engine, std::string id, Node& node, nlohmann::json options, bool force);
  std::string_view type() const override { return "amend"; }
  Task<Result<void>> co_run() override;

 private:
  std::string node_name_;
  nlohmann::json options_;
  bool force_;
};

}  // namespace strata
