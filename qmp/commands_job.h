// The job QMP commands and events, a thin adapter over the Engine's
// JobRegistry (jobs/job_registry.h): job-pause/-resume/-cancel/-complete/
// -finalize/-dismiss, block-job-set-speed/-cancel/-pause/-resume/
// -complete/-finalize/-dismiss, query-jobs, query-block-jobs, and the
// events JOB_STATUS_CHANGE and BLOCK_JOB_READY/PENDING/COMPLETED/
// CANCELLED/ERROR, with QEMU 7.2's arguments, fields and error classes
// (job-*: GenericError "Job not found"; block-job-*: DeviceNotActive
// "Block job '%s' not found").
//
// Contract: one listener per QmpContext turns JobEvents into QMP events.
// The daemon's shutdown (quit, SIGTERM) force-cancels every job and waits
// for it, emitting its events, as qemu-storage-daemon does.
// Thread rules: loop-thread only.
#pragma once

namespace strata::qmp {

class QmpContext;

void register_job_commands(QmpContext& ctx);

}  // namespace strata::qmp
