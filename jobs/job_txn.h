// JobTxn: a group of jobs that finish together (QEMU's JobTxn). Every job
// is in one: a job created without a transaction gets one of its own.
//
// Contract: a job that succeeds waits (waiting) until every job of its
// transaction has finished its run; then all become pending together and
// are finalized together (auto-finalize, or one finalize verb on any of
// them): every job's prepare runs first, and only if all succeed does each
// commit; otherwise the transaction aborts. The first failure (a failed
// run, a failed prepare, a forced cancel of a job whose run had finished)
// force-cancels every other job of the transaction, waits for their runs
// to end, and finalizes them all with abort (their events: cancelled; the
// failed job's: completed with its error). Jobs are kept newest first, the
// order QEMU finalizes them in.
// Thread rules: loop-thread only. Completion steps of one transaction are
// serialized by its lock, since prepare/commit/abort/clean may suspend.
#pragma once

#include <memory>
#include <vector>

#include "base/sync.h"

namespace strata {

class Job;

class JobTxn : public std::enable_shared_from_this<JobTxn> {
 public:
  explicit JobTxn(Loop& loop) : lock_(loop) {}
  JobTxn(const JobTxn&) = delete;
  JobTxn& operator=(const JobTxn&) = delete;

  const std::vector<Job*>& jobs() const { return jobs_; }
  bool aborting() const { return aborting_; }

 private:
  friend class Job;
  friend class JobRegistry;
  void add(Job* job) { jobs_.insert(jobs_.begin(), job); }
  void remove(Job* job);
  std::vector<std::shared_ptr<Job>> snapshot() const;
  CoMutex& lock() { return lock_; }
  // Each runs with lock() held.
  Task<void> co_success_locked(Job& job);
  Task<void> co_finalize_locked(Job& job);
  Task<void> co_abort_locked(Job& job);

  std::vector<Job*> jobs_;
  bool aborting_ = false;
  CoMutex lock_;
};

}  // namespace strata
