// Arguments every command that starts a block job shares: job-id,
// auto-finalize, auto-dismiss and the error policies, read as QEMU reads
// them (the schema checked their types and enum values already).
// Thread rules: none; pure functions.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "jobs/job.h"
#include "jobs/job_types.h"

namespace strata::qmp {

// Without a job-id a job is named after its device, as QEMU does;
// qemu-storage-daemon has no device names, so the node name serves.
inline JobOptions job_options(const nlohmann::json& args, const std::string& device) {
  JobOptions o;
  o.id = args.value("job-id", device);
  o.auto_finalize = args.value("auto-finalize", true);
  o.auto_dismiss = args.value("auto-dismiss", true);
  return o;
}

// An on-error style argument; report when absent.
inline OnError on_error_of(const nlohmann::json& args, const char* key) {
  if (!args.contains(key)) return OnError::kReport;
  return parse_on_error(args[key].get<std::string>()).value_or(OnError::kReport);
}

}  // namespace strata::qmp
