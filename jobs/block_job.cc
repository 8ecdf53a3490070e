#include "jobs/block_job.h"

#include "block/core/graph.h"
#include "strata/engine.h"

namespace strata {

BlockJob::BlockJob(Engine& engine, JobOptions options) : Job(engine, std::move(options)) {}

BlockJob::~BlockJob() = default;

Result<void> BlockJob::set_speed(int64_t speed) {
  STRATA_TRY(check_verb(JobVerb::kSetSpeed));
  if (speed < 0) return Error{EINVAL, "Parameter 'speed' expects a non-negative value"};
  uint64_t old = speed_;
  speed_ = static_cast<uint64_t>(speed);
  limiter_.set_speed(speed_);
  if (speed_ && speed_ <= old) return {};
  // Faster (or unlimited): cut a rate-limit sleep short.
  if (sleeping()) enter();
  return {};
}

void BlockJob::set_error_policies(OnError on_source_error, OnError on_target_error) {
  on_source_error_ = on_source_error;
  on_target_error_ = on_target_error;
}

Result<void> BlockJob::add_node(Node& node, std::string role, uint64_t perm, uint64_t shared) {
  std::string user = std::string(type()) + " job '" + id() + "'";
  STRATA_TRY_ASSIGN(Child * edge, engine().graph().attach_root(node, user, perm, shared));
  nodes_.push_back({edge, std::move(role)});
  return {};
}

Task<void> BlockJob::co_release() {
  auto nodes = std::move(nodes_);
  nodes_.clear();
  for (auto it = nodes.rbegin(); it != nodes.rend(); ++it) {
    co_await engine().graph().co_detach(it->edge);
  }
}

Task<void> BlockJob::co_rate_limit(uint64_t bytes) {
  for (;;) {
    if (is_cancelled()) co_return;
    uint64_t delay = limiter_.delay_ns(bytes);
    if (delay == 0) break;
    co_await co_sleep_ns(delay);  // speed may change meanwhile: ask again
  }
  limiter_.account(bytes);
}

ErrorAction BlockJob::decide(OnError policy, int code) const {
  switch (policy) {
    case OnError::kEnospc:
    case OnError::kAuto:
      return code == ENOSPC ? ErrorAction::kStop : ErrorAction::kReport;
    case OnError::kStop:
      return ErrorAction::kStop;
    case OnError::kIgnore:
      return ErrorAction::kIgnore;
    case OnError::kReport:
      break;
  }
  return ErrorAction::kReport;
}

Task<BlockJob::ErrorDecision> BlockJob::co_handle_error(Error error, bool is_read) {
  auto self = shared_from_this();
  ErrorAction action = decide(is_read ? on_source_error_ : on_target_error_, error.code);
  notify(JobEventKind::kError, is_read, action);
  on_io_error(is_read);
  if (action == ErrorAction::kReport) co_return ErrorDecision::kFail;
  if (action == ErrorAction::kIgnore) co_return ErrorDecision::kIgnore;
  set_user_paused_by_error();
  if (io_status_ == IoStatus::kOk) {
    io_status_ = error.code == ENOSPC ? IoStatus::kNoSpace : IoStatus::kFailed;
  }
  co_await co_pause_point();
  co_return is_cancelled() ? ErrorDecision::kFail : ErrorDecision::kRetry;
}

void BlockJob::on_user_resume() {
  io_status_ = IoStatus::kOk;
}

}  // namespace strata
