#include "jobs/job_registry.h"

#include <algorithm>
#include <cctype>

#include "strata/engine.h"

namespace strata {

JobRegistry::~JobRegistry() {
  // Jobs still registered (an engine destroyed without shutting its jobs
  // down) leave their transactions so nothing keeps the other alive.
  for (auto& job : jobs_) {
    if (job->txn_) job->txn_->remove(job.get());
    job->txn_.reset();
    job->registry_ = nullptr;
  }
}

bool JobRegistry::id_wellformed(std::string_view id) {
  if (id.empty() || !std::isalpha(static_cast<unsigned char>(id[0]))) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_';
  });
}

Result<void> JobRegistry::check_id(const std::optional<std::string>& id, bool internal) const {
  if (internal) {
    if (id) return Error{EINVAL, "Cannot specify job ID for internal job"};
    return {};
  }
  if (!id) return Error{EINVAL, "An explicit job ID is required"};
  if (!id_wellformed(*id)) return Error{EINVAL, "Invalid job ID '" + *id + "'"};
  if (find(*id)) return Error{EEXIST, "Job ID '" + *id + "' already in use"};
  return {};
}

std::shared_ptr<JobTxn> JobRegistry::new_txn() {
  return std::make_shared<JobTxn>(engine_.loop());
}

Result<void> JobRegistry::add(const std::shared_ptr<Job>& job, std::shared_ptr<JobTxn> txn) {
  std::optional<std::string> id;
  if (job->has_id_) id = job->id();
  STRATA_TRY(check_id(id, job->is_internal()));
  jobs_.push_back(job);
  job->attach(this, txn ? std::move(txn) : new_txn());
  job->transition(JobStatus::kCreated);
  return {};
}

std::shared_ptr<Job> JobRegistry::find(std::string_view id) const {
  for (const auto& job : jobs_) {
    if (!job->is_internal() && job->id() == id) return job;
  }
  return nullptr;
}

std::vector<std::shared_ptr<Job>> JobRegistry::list() const {
  return {jobs_.rbegin(), jobs_.rend()};
}

uint64_t JobRegistry::add_listener(JobListener listener) {
  uint64_t id = ++next_listener_;
  listeners_.emplace(id, std::move(listener));
  return id;
}

void JobRegistry::remove_listener(uint64_t id) {
  listeners_.erase(id);
}

void JobRegistry::notify(const JobEvent& event) {
  auto listeners = listeners_;  // a listener may remove itself
  for (auto& [id, fn] : listeners) fn(event);
}

void JobRegistry::remove(Job* job) {
  jobs_.erase(std::remove_if(jobs_.begin(), jobs_.end(),
                             [job](const std::shared_ptr<Job>& j) { return j.get() == job; }),
              jobs_.end());
}

Task<void> JobRegistry::co_cancel_all() {
  while (!jobs_.empty()) {
    auto job = jobs_.back();
    co_await job->co_cancel_sync(true);
  }
}

}  // namespace strata
