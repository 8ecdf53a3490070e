// BlockJob: a Job that works on block nodes (QEMU's BlockJob): a speed
// limit, error policies with BLOCK_JOB_ERROR, io-status, the nodes it
// holds, and the fields of query-block-jobs and of the BLOCK_JOB_* events.
//
// Nodes: add_node() holds a node for the job's lifetime through a graph
// root edge taking `perm` and sharing `shared` (QEMU's block_job_add_bdrv;
// the edge's user reads "<type> job '<id>'" in permission messages). The
// edges are released when the job is dismissed, as QEMU frees them with the
// job: a concluded job still holds its nodes until then. This is the one
// way a job type takes nodes, kept narrow on purpose: the graph will later
// give these edges drain callbacks (pausing the job while a node drains)
// and operation blockers; job types need not change for that.
//
// Speed: set_speed() (block-job-set-speed, or `speed` at creation) limits
// the rate over any one-second window (base/rate_limit.h); the run
// coroutine calls co_rate_limit(bytes) before each chunk. 0 is unlimited.
//
// Errors: the run coroutine hands each I/O error to co_handle_error(error,
// is_read). It applies the policy for reads (on-source-error) or writes
// (on-target-error), both the same for jobs with one on-error:
//   report         -> BLOCK_JOB_ERROR action=report, returns kFail (end the
//                     job with the error);
//   ignore         -> action=ignore, returns kIgnore (the job carries on;
//                     copy jobs retry the range later);
//   stop           -> action=stop, the job becomes user-paused (paused, or
//                     standby when ready) with io-status failed (nospace
//                     for ENOSPC); it waits there and returns kRetry once
//                     resumed (io-status back to ok), kFail if cancelled;
//   enospc / auto  -> stop for ENOSPC, report otherwise.
// As in QEMU 7.2, an error does not leave the ready state; on_io_error()
// lets a job drop its own notion of being in sync (mirror).
// Thread rules: loop-thread only.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/rate_limit.h"
#include "jobs/job.h"

namespace strata {

class Node;
class Child;

class BlockJob : public Job {
 public:
  BlockJob(Engine& engine, JobOptions options);
  ~BlockJob() override;

  BlockJob* as_block_job() override { return this; }
  const BlockJob* as_block_job() const override { return this; }

  // block-job-set-speed: checks the verb, then the value.
  Result<void> set_speed(int64_t speed);
  uint64_t speed() const { return speed_; }
  IoStatus io_status() const { return io_status_; }

  void set_error_policies(OnError on_source_error, OnError on_target_error);
  OnError on_source_error() const { return on_source_error_; }
  OnError on_target_error() const { return on_target_error_; }

  // Holds `node` until the job is dismissed; `role` names the use ("main
  // node", "target", "intermediate node").
  Result<void> add_node(Node& node, std::string role, uint64_t perm, uint64_t shared);
  struct NodeUse {
    Child* edge;
    std::string role;
  };
  const std::vector<NodeUse>& nodes() const { return nodes_; }

  // Waits until `bytes` more keep the speed limit, then counts them.
  // Returns early (without counting) when the job is cancelled.
  Task<void> co_rate_limit(uint64_t bytes);

  enum class ErrorDecision { kRetry, kIgnore, kFail };
  // Takes the error by value: GCC 12 mishandles a temporary bound to a
  // reference parameter of an awaited coroutine.
  Task<ErrorDecision> co_handle_error(Error error, bool is_read);

  // The clock of the rate limiter (tests drive it by hand).
  void set_rate_clock(RateLimiter::Clock clock) { limiter_ = RateLimiter(std::move(clock)); }

 protected:
  void on_user_resume() override;
  Task<void> co_release() override;
  virtual void on_io_error(bool is_read) {}

 private:
  ErrorAction decide(OnError policy, int code) const;

  uint64_t speed_ = 0;
  RateLimiter limiter_;
  IoStatus io_status_ = IoStatus::kOk;
  OnError on_source_error_ = OnError::kReport;
  OnError on_target_error_ = OnError::kReport;
  std::vector<NodeUse> nodes_;
};

}  // namespace strata
