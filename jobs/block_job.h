// BlockJob: a Job that works on block nodes (QEMU's BlockJob): a speed
// limit, error policies with BLOCK_JOB_ERROR, io-status, the nodes it
// holds, and the fields of query-block-jobs and of the BLOCK_JOB_* events.
//
// Nodes: add_node() holds a node for the job's lifetime through a graph
// root edge taking `perm` and sharing `shared` (QEMU's block_job_add_bdrv;
// the edge's user reads "<type> job '<id>'" in permission messages). The
// edges are released when the job is dismissed, as QEMU frees them with the
// job: a concluded job still holds its nodes until then. The job owns its
// edges (EdgeOwner): its own requests are not held back by drains; a drain
// of a node it holds pauses it instead and waits until it is parked at a
// pause point. The edges stay at their nodes through pivots, and the nodes
// carry an operation blocker naming the job.
//
// Speed: set_speed() (block-job-set-speed, or `speed` at creation) limits
// the rate over any one-second window (base/rate_limit.h); the run
// coroutine calls co_rate_limit(bytes) before each chunk, a copy engine's
// workers (several at once) co_throttle(bytes). 0 is unlimited.
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
#include <optional>
#include <string>
#include <vector>

#include "base/rate_limit.h"
#include "block/core/node.h"
#include "jobs/job.h"

namespace strata {

class Node;
class Child;

// block-job-change's options (QEMU's BlockJobChangeOptions): the job type
// the caller names, and what that type may change while it runs.
struct BlockJobChange {
  std::string type;
  std::optional<bool> write_blocking;  // mirror: copy-mode
};

class BlockJob : public Job, public EdgeOwner {
 public:
  BlockJob(Engine& engine, JobOptions options);
  ~BlockJob() override;

  BlockJob* as_block_job() override { return this; }
  const BlockJob* as_block_job() const override { return this; }

  // block-job-set-speed: checks the verb, then the value.
  Result<void> set_speed(int64_t speed);
  uint64_t speed() const { return speed_; }
  IoStatus io_status() const { return io_status_; }

  // block-job-change: checks the type ("Job 'x' is 'mirror' job, not
  // 'commit'"), the verb, then lets the job type change (on_change()).
  Result<void> change(const BlockJobChange& change);
  // query-block-jobs' `actively-synced` (QEMU 8.2, mirror jobs only).
  virtual std::optional<bool> actively_synced_info() const { return std::nullopt; }

  void set_error_policies(OnError on_source_error, OnError on_target_error);
  OnError on_source_error() const { return on_source_error_; }
  OnError on_target_error() const { return on_target_error_; }

  // Holds `node` until the job is dismissed; `role` names the use ("main
  // node", "target", "intermediate node"). The first node added is the
  // job's main node (a backend user, as QEMU's job BlockBackend); every
  // edge stays at its node when the node is replaced, and the node is
  // blocked for other operations ("Node 'x' is busy: block device is in
  // use by block job: <type>") except those in `allowed_ops`.
  Result<Child*> add_node(Node& node, std::string role, uint64_t perm, uint64_t shared,
                          uint32_t allowed_ops = 0);
  // The same for a node the job does I/O on through a backend of its own
  // (QEMU's BlockBackends on a mirror's target, a commit's base and top):
  // blockdev-del of it fails with "Node x is in use", as a device's node.
  Result<Child*> add_backend_node(Node& node, std::string role, uint64_t perm, uint64_t shared);
  // Releases one node before the job ends (a filter removed at completion).
  Task<void> co_remove_node(Child* edge);

  // EdgeOwner: a drain of a node the job holds pauses the job; the drain
  // waits until the job is parked (or done).
  void drained_begin() override { pause(); }
  bool drained_busy() const override { return busy() && !is_completed(); }
  void drained_end() override { resume(); }
  struct NodeUse {
    Child* edge;
    std::string role;
    Node* blocked;  // the node the blocker is on (the edge may move)
    uint64_t blocker;
  };
  const std::vector<NodeUse>& nodes() const { return nodes_; }

  // Waits until `bytes` more keep the speed limit, then counts them.
  // Returns early (without counting) when the job is cancelled.
  Task<void> co_rate_limit(uint64_t bytes);
  // Counts `bytes` as sent now without waiting (a copy engine's worker
  // whose run coroutine waits with co_rate_limit(0) before each chunk: a
  // pause or drain then never waits for a rate sleep).
  void note_rate(uint64_t bytes) { limiter_.account(bytes); }
  // The same for code other than the run coroutine (copy workers): the
  // job stays busy while it waits, in slices of 100 ms at most.
  Task<void> co_throttle(uint64_t bytes);

  enum class ErrorDecision { kRetry, kIgnore, kFail };
  // Takes the error by value: GCC 12 mishandles a temporary bound to a
  // reference parameter of an awaited coroutine.
  Task<ErrorDecision> co_handle_error(Error error, bool is_read);
  // The same decision for an error met outside the run coroutine (a
  // mirror's write-blocking guest write): the event is emitted and `stop`
  // pauses the job, but nothing waits here.
  ErrorAction note_error(const Error& error, bool is_read);

  // The clock of the rate limiter (tests drive it by hand).
  void set_rate_clock(RateLimiter::Clock clock) { limiter_ = RateLimiter(std::move(clock)); }

 protected:
  void on_user_resume() override;
  Task<void> co_release() override;
  void on_idle() override;
  virtual void on_io_error(bool is_read) {}
  virtual Result<void> on_change(const BlockJobChange&) {
    return Error{ENOTSUP, "Job type does not support change"};
  }
  // As QEMU: a block job's run fails with an errno, reported as its
  // strerror() text ("Input/output error"), whatever the layer below said.
  Error run_error(Error error) const override;

 private:
  ErrorAction decide(OnError policy, int code) const;
  Task<void> co_wait_rate(uint64_t bytes, bool worker);
  Result<Child*> hold(Node& node, std::string role, uint64_t perm, uint64_t shared,
                      uint32_t allowed_ops, bool backend);

  uint64_t speed_ = 0;
  RateLimiter limiter_;
  IoStatus io_status_ = IoStatus::kOk;
  OnError on_source_error_ = OnError::kReport;
  OnError on_target_error_ = OnError::kReport;
  std::vector<NodeUse> nodes_;
};

}  // namespace strata
