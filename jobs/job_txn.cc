// Completion of jobs and of their transactions: QEMU's job_completed,
// job_completed_txn_success/abort, job_do_finalize, job_finalize_single,
// job_conclude.
#include <algorithm>
#include <cstring>

#include "jobs/job.h"
#include "jobs/job_registry.h"

namespace strata {

void JobTxn::remove(Job* job) {
  jobs_.erase(std::remove(jobs_.begin(), jobs_.end(), job), jobs_.end());
}

std::vector<std::shared_ptr<Job>> JobTxn::snapshot() const {
  std::vector<std::shared_ptr<Job>> out;
  for (Job* j : jobs_) out.push_back(j->shared_from_this());
  return out;
}

Task<void> JobTxn::co_success_locked(Job& job) {
  for (Job* j : jobs_) {
    if (!j->is_completed()) co_return;  // the last one to finish goes on
  }
  bool manual = false;
  for (auto& j : snapshot()) {
    j->transition(JobStatus::kPending);
    if (!j->auto_finalize_) {
      j->notify(JobEventKind::kPending);
      manual = true;
    }
  }
  if (!manual) co_await co_finalize_locked(job);
}

Task<void> JobTxn::co_finalize_locked(Job& job) {
  auto keep = shared_from_this();
  bool ok = true;
  for (auto& j : snapshot()) {
    auto r = co_await j->co_prepare_one();
    if (!r) {
      ok = false;
      break;
    }
  }
  if (!ok) {
    co_await co_abort_locked(job);
    co_return;
  }
  for (auto& j : snapshot()) co_await j->co_finalize_single();
}

Task<void> JobTxn::co_abort_locked(Job& job) {
  if (aborting_) co_return;  // the job that failed first handles it all
  aborting_ = true;
  auto keep = shared_from_this();
  auto self = job.shared_from_this();
  for (auto& j : snapshot()) {
    // One failure makes every other result moot: cancel them by force.
    if (j.get() != &job) j->cancel_async(true);
  }
  while (!jobs_.empty()) {
    auto other = jobs_.front()->shared_from_this();
    if (!other->is_completed()) {
      if (!other->started_) {
        other->update_rc();
      } else {
        other->enter();
        co_await other->co_wait_until([](const Job& j) { return j.is_completed(); });
      }
    }
    co_await other->co_finalize_single();
  }
}

void Job::update_rc() {
  if (!error_ && is_cancelled()) error_ = Error{ECANCELED, std::strerror(ECANCELED)};
  if (error_) transition(JobStatus::kAborting);
}

Task<void> Job::co_completed() {
  auto self = shared_from_this();
  update_rc();
  if (!error_) transition(JobStatus::kWaiting);
  auto txn = txn_;
  auto guard = co_await txn->lock().co_scoped_lock();
  if (txn_ != txn) co_return;  // finalized meanwhile by a transaction abort
  if (error_) {
    co_await txn->co_abort_locked(*this);
  } else {
    co_await txn->co_success_locked(*this);
  }
}

Task<Result<void>> Job::co_prepare_one() {
  if (!error_) {
    auto r = co_await co_prepare();
    if (!r) error_ = std::move(r).error();
    update_rc();
  }
  if (error_) co_return *error_;
  co_return Result<void>{};
}

Task<void> Job::co_finalize_single() {
  auto self = shared_from_this();
  update_rc();  // a late failure of the transaction aborts this job too
  if (!error_) {
    co_await co_commit();
  } else {
    co_await co_abort();
  }
  co_await co_clean();
  if (started_) notify(is_cancelled() ? JobEventKind::kCancelled : JobEventKind::kCompleted);
  if (txn_) txn_->remove(this);
  txn_.reset();
  co_await co_conclude();
}

Task<void> Job::co_conclude() {
  transition(JobStatus::kConcluded);
  if (auto_dismiss_ || !started_) co_await co_do_dismiss();
}

}  // namespace strata
