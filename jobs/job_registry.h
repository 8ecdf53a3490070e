// JobRegistry: the jobs of one Engine (Engine::jobs()) and the listeners
// of their events. Jobs do not depend on QMP: the QMP server is one
// listener; an embedder adds its own to get the same events
// (JOB_STATUS_CHANGE, BLOCK_JOB_*) as plain JobEvent values.
//
// Contract: add() validates the id as QEMU's job_create does ("Invalid job
// ID '%s'", "Job ID '%s' already in use", "An explicit job ID is
// required", "Cannot specify job ID for internal job"), puts the job in
// `txn` (or a transaction of its own) and moves it to created. A job stays
// registered until it is dismissed (null). Listeners run synchronously
// inside the transition that caused the event, so the events of one job
// arrive in QEMU's order; a listener must not call back into the job.
// Thread rules: loop-thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "jobs/job.h"
#include "jobs/job_txn.h"

namespace strata {

using JobListener = std::function<void(const JobEvent&)>;

class JobRegistry {
 public:
  explicit JobRegistry(Engine& engine) : engine_(engine) {}
  ~JobRegistry();
  JobRegistry(const JobRegistry&) = delete;
  JobRegistry& operator=(const JobRegistry&) = delete;

  Engine& engine() const { return engine_; }

  // QEMU's id_wellformed(): a letter, then letters, digits, '-', '.', '_'.
  static bool id_wellformed(std::string_view id);
  Result<void> check_id(const std::optional<std::string>& id, bool internal) const;

  // Registers `job` (-> created) in `txn`, or in a new transaction.
  Result<void> add(const std::shared_ptr<Job>& job, std::shared_ptr<JobTxn> txn = nullptr);
  std::shared_ptr<JobTxn> new_txn();

  // A job by id (internal jobs have none).
  std::shared_ptr<Job> find(std::string_view id) const;
  // Every job, newest first (QEMU's job list order), internal ones too.
  std::vector<std::shared_ptr<Job>> list() const;

  uint64_t add_listener(JobListener listener);
  void remove_listener(uint64_t id);

  // Force-cancels every job and dismisses concluded ones, waiting for each
  // (quit; QEMU's job_cancel_sync_all()). Events are emitted as usual.
  Task<void> co_cancel_all();

 private:
  friend class Job;
  void notify(const JobEvent& event);
  void remove(Job* job);

  Engine& engine_;
  std::vector<std::shared_ptr<Job>> jobs_;  // creation order
  std::map<uint64_t, JobListener> listeners_;
  uint64_t next_listener_ = 0;
};

}  // namespace strata
