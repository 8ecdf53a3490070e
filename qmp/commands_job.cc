// Job commands over JobRegistry, in QEMU's job-qmp.c / blockdev.c shapes.
#include "qmp/commands_job.h"

#include "jobs/block_job.h"
#include "jobs/job_registry.h"
#include "qmp/context.h"
#include "qmp/errors.h"

namespace strata::qmp {

namespace {

// Forwards the registry's events to the monitors while the context lives.
class JobEventBridge {
 public:
  explicit JobEventBridge(QmpContext& ctx) : ctx_(ctx) {
    listener_ = ctx.engine().jobs().add_listener([this](const JobEvent& e) { emit(e); });
  }
  ~JobEventBridge() { ctx_.engine().jobs().remove_listener(listener_); }

 private:
  void emit(const JobEvent& e);
  QmpContext& ctx_;
  uint64_t listener_;
};

json block_job_progress(const BlockJob& job) {
  return {{"type", std::string(job.type())},
          {"device", job.id()},
          {"len", job.progress_total()},
          {"offset", job.progress_current()},
          {"speed", job.speed()}};
}

void JobEventBridge::emit(const JobEvent& e) {
  if (e.kind == JobEventKind::kStatusChange) {
    ctx_.emit_event("JOB_STATUS_CHANGE", {{"id", e.job.id()}, {"status", to_string(e.status)}});
    return;
  }
  const BlockJob* bj = e.job.as_block_job();
  if (!bj) return;  // create and amend jobs have no BLOCK_JOB_* events
  switch (e.kind) {
    case JobEventKind::kReady:
      ctx_.emit_event("BLOCK_JOB_READY", block_job_progress(*bj));
      break;
    case JobEventKind::kPending:
      ctx_.emit_event("BLOCK_JOB_PENDING", {{"type", std::string(bj->type())}, {"id", bj->id()}});
      break;
    case JobEventKind::kCompleted: {
      json data = block_job_progress(*bj);
      if (bj->error()) data["error"] = bj->error()->message;
      ctx_.emit_event("BLOCK_JOB_COMPLETED", data);
      break;
    }
    case JobEventKind::kCancelled:
      ctx_.emit_event("BLOCK_JOB_CANCELLED", block_job_progress(*bj));
      break;
    case JobEventKind::kError:
      ctx_.emit_event("BLOCK_JOB_ERROR", {{"device", bj->id()},
                                          {"operation", e.is_read ? "read" : "write"},
                                          {"action", to_string(e.action)}});
      break;
    case JobEventKind::kStatusChange:
      break;
  }
}

// Lookups.

Result<std::shared_ptr<Job>> find_job(QmpContext& ctx, const json& args) {
  auto job = ctx.engine().jobs().find(args["id"].get<std::string>());
  if (!job) return Error{ENOENT, "Job not found"};
  return job;
}

Result<std::shared_ptr<BlockJob>> find_block_job(QmpContext& ctx, const std::string& id) {
  auto job = ctx.engine().jobs().find(id);
  if (!job || !job->as_block_job()) {
    return class_error(ErrorClass::kDeviceNotActive, "Block job '" + id + "' not found");
  }
  return std::shared_ptr<BlockJob>(job, job->as_block_job());
}

Result<std::shared_ptr<BlockJob>> find_block_job(QmpContext& ctx, const json& args,
                                                 const char* key) {
  return find_block_job(ctx, args[key].get<std::string>());
}

// job-*.

Task<Result<json>> co_job_pause(QmpContext& ctx, json args) {
  STRATA_CO_TRY_ASSIGN(auto job, find_job(ctx, args));
  STRATA_CO_TRY(job->user_pause());
  co_return json::object();
}

Task<Result<json>> co_job_resume(QmpContext& ctx, json args) {
  STRATA_CO_TRY_ASSIGN(auto job, find_job(ctx, args));
  STRATA_CO_TRY(job->user_resume());
  co_return json::object();
}

Task<Result<json>> co_job_cancel(QmpContext& ctx, json args) {
  STRATA_CO_TRY_ASSIGN(auto job, find_job(ctx, args));
  STRATA_CO_TRY(co_await job->co_user_cancel(true));
  co_return json::object();
}

Task<Result<json>> co_job_complete(QmpContext& ctx, json args) {
  STRATA_CO_TRY_ASSIGN(auto job, find_job(ctx, args));
  STRATA_CO_TRY(job->complete());
  co_return json::object();
}

Task<Result<json>> co_job_finalize(QmpContext& ctx, json args) {
  STRATA_CO_TRY_ASSIGN(auto job, find_job(ctx, args));
  STRATA_CO_TRY(co_await job->co_finalize());
  co_return json::object();
}

Task<Result<json>> co_job_dismiss(QmpContext& ctx, json args) {
  STRATA_CO_TRY_ASSIGN(auto job, find_job(ctx, args));
  STRATA_CO_TRY(co_await job->co_dismiss());
  co_return json::object();
}

// block-job-*.

Task<Result<json>> co_block_job_set_speed(QmpContext& ctx, json args) {
  STRATA_CO_TRY_ASSIGN(auto job, find_block_job(ctx, args, "device"));
  STRATA_CO_TRY(job->set_speed(args["speed"].get<int64_t>()));
  co_return json::object();
}

Task<Result<json>> co_block_job_cancel(QmpContext& ctx, json args) {
  std::string device = args["device"].get<std::string>();
  STRATA_CO_TRY_ASSIGN(auto job, find_block_job(ctx, device));
  bool force = args.value("force", false);
  if (job->user_paused() && !force) {
    co_return Error{EBUSY, "The block job for device '" + device + "' is currently paused"};
  }
  STRATA_CO_TRY(co_await job->co_user_cancel(force));
  co_return json::object();
}

Task<Result<json>> co_block_job_pause(QmpContext& ctx, json args) {
  STRATA_CO_TRY_ASSIGN(auto job, find_block_job(ctx, args, "device"));
  STRATA_CO_TRY(job->user_pause());
  co_return json::object();
}

Task<Result<json>> co_block_job_resume(QmpContext& ctx, json args) {
  STRATA_CO_TRY_ASSIGN(auto job, find_block_job(ctx, args, "device"));
  STRATA_CO_TRY(job->user_resume());
  co_return json::object();
}

Task<Result<json>> co_block_job_complete(QmpContext& ctx, json args) {
  STRATA_CO_TRY_ASSIGN(auto job, find_block_job(ctx, args, "device"));
  STRATA_CO_TRY(job->complete());
  co_return json::object();
}

Task<Result<json>> co_block_job_finalize(QmpContext& ctx, json args) {
  STRATA_CO_TRY_ASSIGN(auto job, find_block_job(ctx, args, "id"));
  STRATA_CO_TRY(co_await job->co_finalize());
  co_return json::object();
}

Task<Result<json>> co_block_job_dismiss(QmpContext& ctx, json args) {
  STRATA_CO_TRY_ASSIGN(auto job, find_block_job(ctx, args, "id"));
  STRATA_CO_TRY(co_await job->co_dismiss());
  co_return json::object();
}

// block-job-change (QEMU 8.2; the type check as QEMU 9.1): the members
// of the type's branch (mirror: copy-mode) are checked as QAPI checks a
// union, before the job is looked up.
Task<Result<json>> co_block_job_change(QmpContext& ctx, json args) {
  std::string type = args["type"].get<std::string>();
  bool mirror = type == "mirror";
  if (mirror && !args.contains("copy-mode")) {
    co_return Error{EINVAL, "Parameter 'copy-mode' is missing"};
  }
  if (!mirror && args.contains("copy-mode")) {
    co_return Error{EINVAL, "Parameter 'copy-mode' is unexpected"};
  }
  STRATA_CO_TRY_ASSIGN(auto job, find_block_job(ctx, args, "id"));
  BlockJobChange change{.type = type};
  if (mirror) change.write_blocking = args["copy-mode"] == "write-blocking";
  STRATA_CO_TRY(job->change(change));
  co_return json::object();
}

// Queries, newest job first as in QEMU.

json job_info(const Job& job) {
  json info = {{"id", job.id()},
               {"type", std::string(job.type())},
               {"status", to_string(job.status())},
               {"current-progress", job.progress_current()},
               {"total-progress", job.progress_total()}};
  if (job.error()) info["error"] = job.error()->message;
  return info;
}

json block_job_info(const BlockJob& job) {
  json info = {{"type", std::string(job.type())},
               {"device", job.id()},
               {"len", job.progress_total()},
               {"offset", job.progress_current()},
               {"busy", job.busy()},
               {"paused", job.pause_count() > 0},
               {"speed", job.speed()},
               {"io-status", to_string(job.io_status())},
               {"ready", job.is_ready()},
               {"status", to_string(job.status())},
               {"auto-finalize", job.auto_finalize()},
               {"auto-dismiss", job.auto_dismiss()}};
  if (job.error()) info["error"] = job.error()->message;
  if (auto synced = job.actively_synced_info()) info["actively-synced"] = *synced;
  return info;
}

Task<Result<json>> co_query_jobs(QmpContext& ctx, json) {
  json out = json::array();
  for (const auto& job : ctx.engine().jobs().list()) {
    if (!job->is_internal()) out.push_back(job_info(*job));
  }
  co_return out;
}

Task<Result<json>> co_query_block_jobs(QmpContext& ctx, json) {
  json out = json::array();
  for (const auto& job : ctx.engine().jobs().list()) {
    if (!job->is_internal() && job->as_block_job())
      out.push_back(block_job_info(*job->as_block_job()));
  }
  co_return out;
}

Task<void> co_shutdown_jobs(QmpContext* ctx) {
  co_await ctx->engine().jobs().co_cancel_all();
}

void declare_job_types(Schema& s) {
  s.add_enum("JobType", {"commit", "stream", "mirror", "backup", "create", "amend", "snapshot-load",
                         "snapshot-save", "snapshot-delete"});
  s.add_enum("JobStatus", {"undefined", "created", "running", "paused", "ready", "standby",
                           "waiting", "pending", "aborting", "concluded", "null"});
  s.add_enum("BlockDeviceIoStatus", {"ok", "failed", "nospace"});
  s.add_enum("IoOperationType", {"read", "write"});
  s.add_enum("BlockErrorAction", {"ignore", "report", "stop"});
  s.add_enum("BlockdevOnError", {"report", "ignore", "enospc", "stop", "auto"});
  s.add_object("JobInfo", {{"id", "str"},
                           {"type", "JobType"},
                           {"status", "JobStatus"},
                           {"current-progress", "int"},
                           {"total-progress", "int"},
                           {"error", "str", true}});
  s.add_object("BlockJobInfo", {{"type", "str"},
                                {"device", "str"},
                                {"len", "int"},
                                {"offset", "int"},
                                {"busy", "bool"},
                                {"paused", "bool"},
                                {"speed", "int"},
                                {"io-status", "BlockDeviceIoStatus"},
                                {"ready", "bool"},
                                {"status", "JobStatus"},
                                {"auto-finalize", "bool"},
                                {"auto-dismiss", "bool"},
                                {"error", "str", true},
                                {"actively-synced", "bool", true}});
  s.add_object("q_obj_JOB_STATUS_CHANGE-arg", {{"id", "str"}, {"status", "JobStatus"}});
  std::vector<Member> progress = {
      {"type", "JobType"}, {"device", "str"}, {"len", "int"}, {"offset", "int"}, {"speed", "int"}};
  std::vector<Member> completed = progress;
  completed.push_back({"error", "str", true});
  s.add_object("q_obj_BLOCK_JOB_COMPLETED-arg", completed);
  s.add_object("q_obj_BLOCK_JOB_CANCELLED-arg", progress);
  s.add_object("q_obj_BLOCK_JOB_READY-arg", progress);
  s.add_object("q_obj_BLOCK_JOB_PENDING-arg", {{"type", "JobType"}, {"id", "str"}});
  s.add_object(
      "q_obj_BLOCK_JOB_ERROR-arg",
      {{"device", "str"}, {"operation", "IoOperationType"}, {"action", "BlockErrorAction"}});
}

void add_id_command(CommandRegistry& r, const char* name, const char* key, CommandHandler fn) {
  r.add({.name = name, .args = {{key, "str"}}, .handler = std::move(fn)});
}

}  // namespace

void register_job_commands(QmpContext& ctx) {
  CommandRegistry& r = ctx.registry();
  declare_job_types(r.schema());
  ctx.service<JobEventBridge>();
  add_id_command(r, "job-pause", "id", co_job_pause);
  add_id_command(r, "job-resume", "id", co_job_resume);
  add_id_command(r, "job-cancel", "id", co_job_cancel);
  add_id_command(r, "job-complete", "id", co_job_complete);
  add_id_command(r, "job-dismiss", "id", co_job_dismiss);
  add_id_command(r, "job-finalize", "id", co_job_finalize);
  r.add({.name = "query-jobs", .returns = "[JobInfo]", .handler = co_query_jobs});
  r.add({.name = "block-job-set-speed",
         .args = {{"device", "str"}, {"speed", "int"}},
         .handler = co_block_job_set_speed});
  r.add({.name = "block-job-cancel",
         .args = {{"device", "str"}, {"force", "bool", true}},
         .handler = co_block_job_cancel});
  add_id_command(r, "block-job-pause", "device", co_block_job_pause);
  add_id_command(r, "block-job-resume", "device", co_block_job_resume);
  add_id_command(r, "block-job-complete", "device", co_block_job_complete);
  add_id_command(r, "block-job-dismiss", "id", co_block_job_dismiss);
  add_id_command(r, "block-job-finalize", "id", co_block_job_finalize);
  r.add({.name = "query-block-jobs", .returns = "[BlockJobInfo]", .handler = co_query_block_jobs});
  r.schema().add_enum("MirrorCopyMode", {"background", "write-blocking"});
  r.add({.name = "block-job-change",
         .args = {{"id", "str"}, {"type", "JobType"}, {"copy-mode", "MirrorCopyMode", true}},
         .handler = co_block_job_change});
  r.add_event({"JOB_STATUS_CHANGE", "q_obj_JOB_STATUS_CHANGE-arg"});
  r.add_event({"BLOCK_JOB_COMPLETED", "q_obj_BLOCK_JOB_COMPLETED-arg"});
  r.add_event({"BLOCK_JOB_CANCELLED", "q_obj_BLOCK_JOB_CANCELLED-arg"});
  r.add_event({"BLOCK_JOB_ERROR", "q_obj_BLOCK_JOB_ERROR-arg"});
  r.add_event({"BLOCK_JOB_READY", "q_obj_BLOCK_JOB_READY-arg"});
  r.add_event({"BLOCK_JOB_PENDING", "q_obj_BLOCK_JOB_PENDING-arg"});
  ctx.add_shutdown_hook([&ctx] { return co_shutdown_jobs(&ctx); });
}

}  // namespace strata::qmp
