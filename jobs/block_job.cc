#include "jobs/block_job.h"

#include <algorithm>
#include <cstring>

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

Result<void> BlockJob::change(const BlockJobChange& change) {
  if (change.type != type()) {
    return Error{EINVAL, "Job '" + id() + "' is '" + std::string(type()) + "' job, not '" +
                             change.type + "'"};
  }
  STRATA_TRY(check_verb(JobVerb::kChange));
  return on_change(change);
}

void BlockJob::set_error_policies(OnError on_source_error, OnError on_target_error) {
  on_source_error_ = on_source_error;
  on_target_error_ = on_target_error;
}

Result<Child*> BlockJob::add_node(Node& node, std::string role, uint64_t perm, uint64_t shared,
                                  uint32_t allowed_ops) {
  return hold(node, std::move(role), perm, shared, allowed_ops, nodes_.empty());
}

Result<Child*> BlockJob::add_backend_node(Node& node, std::string role, uint64_t perm,
                                          uint64_t shared) {
  return hold(node, std::move(role), perm, shared, 0, true);
}

Result<Child*> BlockJob::hold(Node& node, std::string role, uint64_t perm, uint64_t shared,
                              uint32_t allowed_ops, bool backend) {
  std::string user = std::string(type()) + " job '" + id() + "'";
  Graph::RootOptions options{
      .backend = backend, .owner = this, .waits_while_drained = false, .stays_at_node = true};
  STRATA_TRY_ASSIGN(Child * edge, engine().graph().attach_root(node, user, perm, shared, options));
  uint64_t blocker =
      node.block_ops("block device is in use by block job: " + std::string(type()), allowed_ops);
  nodes_.push_back({edge, std::move(role), &node, blocker});
  return edge;
}

Task<void> BlockJob::co_remove_node(Child* edge) {
  for (auto it = nodes_.begin(); it != nodes_.end(); ++it) {
    if (it->edge != edge) continue;
    NodeUse use = *it;
    nodes_.erase(it);
    use.blocked->unblock_ops(use.blocker);
    co_await engine().graph().co_detach(use.edge);
    co_return;
  }
}

Task<void> BlockJob::co_release() {
  auto nodes = std::move(nodes_);
  nodes_.clear();
  for (auto it = nodes.rbegin(); it != nodes.rend(); ++it) {
    it->blocked->unblock_ops(it->blocker);
    co_await engine().graph().co_detach(it->edge);
  }
}

void BlockJob::on_idle() {
  for (const NodeUse& use : nodes_) use.edge->node()->kick_drain();
}

namespace {
constexpr uint64_t kRateSliceNs = 100'000'000;
constexpr uint64_t kMs = 1'000'000;
}  // namespace

Task<void> BlockJob::co_rate_limit(uint64_t bytes) {
  co_await co_wait_rate(bytes, false);
}

Task<void> BlockJob::co_throttle(uint64_t bytes) {
  co_await co_wait_rate(bytes, true);
}

// The run coroutine sleeps the job's sleep (the job is idle meanwhile, and
// set-speed, pause and cancel wake it). Copy workers, several at once,
// sleep a plain timer instead, in slices so that a new speed or a cancel
// takes effect within one. Either way the limit is asked again after.
Task<void> BlockJob::co_wait_rate(uint64_t bytes, bool worker) {
  for (;;) {
    if (is_cancelled()) co_return;
    uint64_t delay = limiter_.delay_ns(bytes);
    if (delay == 0) break;
    if (worker) {
      co_await engine().loop().co_sleep(std::max<uint64_t>(1, std::min(delay, kRateSliceNs) / kMs));
    } else {
      co_await co_sleep_ns(delay);
    }
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

ErrorAction BlockJob::note_error(const Error& error, bool is_read) {
  ErrorAction action = decide(is_read ? on_source_error_ : on_target_error_, error.code);
  notify(JobEventKind::kError, is_read, action);
  on_io_error(is_read);
  if (action != ErrorAction::kStop) return action;
  set_user_paused_by_error();
  if (io_status_ == IoStatus::kOk) {
    io_status_ = error.code == ENOSPC ? IoStatus::kNoSpace : IoStatus::kFailed;
  }
  return action;
}

Task<BlockJob::ErrorDecision> BlockJob::co_handle_error(Error error, bool is_read) {
  auto self = shared_from_this();
  ErrorAction action = note_error(error, is_read);
  if (action == ErrorAction::kReport) co_return ErrorDecision::kFail;
  if (action == ErrorAction::kIgnore) co_return ErrorDecision::kIgnore;
  co_await co_pause_point();
  co_return is_cancelled() ? ErrorDecision::kFail : ErrorDecision::kRetry;
}

Error BlockJob::run_error(Error error) const {
  if (error.code <= 0) return error;
  return Error{error.code, std::strerror(error.code)};
}

void BlockJob::on_user_resume() {
  io_status_ = IoStatus::kOk;
}

}  // namespace strata
