// The job state machine: transitions, verbs, pausing, sleeping and the run
// coroutine. Completion and transactions are in job_txn.cc.
#include "jobs/job.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "jobs/job_registry.h"
#include "strata/engine.h"

namespace strata {

Job::Job(Engine& engine, JobOptions options)
    : engine_(engine),
      loop_(engine.loop()),
      id_(options.id.value_or("")),
      has_id_(options.id.has_value()),
      internal_(options.internal),
      auto_finalize_(options.auto_finalize),
      auto_dismiss_(options.auto_dismiss),
      sleep_timer_(engine.loop()),
      state_waiters_(engine.loop()) {}

Job::~Job() = default;

bool Job::is_ready() const {
  return status_ == JobStatus::kReady || status_ == JobStatus::kStandby;
}

bool Job::is_completed() const {
  switch (status_) {
    case JobStatus::kWaiting:
    case JobStatus::kPending:
    case JobStatus::kAborting:
    case JobStatus::kConcluded:
    case JobStatus::kNull:
      return true;
    default:
      return false;
  }
}

void Job::transition(JobStatus to) {
  JobStatus from = status_;
  if (!transition_allowed(from, to)) {
    std::fprintf(stderr, "strata: job '%s': illegal transition %s -> %s\n", id_.c_str(),
                 to_string(from), to_string(to));
    std::abort();
  }
  status_ = to;
  if (from != to) notify(JobEventKind::kStatusChange);
  state_waiters_.wake_all();
}

void Job::notify(JobEventKind kind, bool is_read, ErrorAction action) {
  if (internal_ || !registry_) return;
  registry_->notify(JobEvent{kind, *this, status_, is_read, action});
}

void Job::attach(JobRegistry* registry, std::shared_ptr<JobTxn> txn) {
  registry_ = registry;
  txn_ = std::move(txn);
  txn_->add(this);
}

Result<void> Job::check_verb(JobVerb verb) const {
  if (verb_allowed(verb, status_)) return {};
  return Error{EPERM, "Job '" + id_ + "' in state '" + to_string(status_) +
                          "' cannot accept command verb '" + to_string(verb) + "'"};
}

// Pausing.

void Job::pause() {
  pause_count_++;
  if (!started_) return;
  on_interrupt();
  if (!paused_) enter();
}

void Job::resume() {
  if (pause_count_ <= 0) {
    std::fprintf(stderr, "strata: job '%s': resume without pause\n", id_.c_str());
    std::abort();
  }
  if (--pause_count_ > 0) return;
  // A rate-limit sleep runs to its end.
  if (!sleep_timer_.pending()) enter();
}

Result<void> Job::user_pause() {
  STRATA_TRY(check_verb(JobVerb::kPause));
  if (user_paused_) return Error{EBUSY, "Job is already paused"};
  user_paused_ = true;
  pause();
  return {};
}

Result<void> Job::user_resume() {
  if (!user_paused_ || pause_count_ <= 0) {
    return Error{EINVAL, "Can't resume a job that was not paused"};
  }
  STRATA_TRY(check_verb(JobVerb::kResume));
  on_user_resume();
  user_paused_ = false;
  resume();
  return {};
}

void Job::set_user_paused_by_error() {
  if (user_paused_) return;
  pause();
  user_paused_ = true;
}

// Yielding and waking.

namespace {
struct JobYield {
  std::coroutine_handle<>* slot;
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) { *slot = h; }
  void await_resume() const noexcept {}
};
}  // namespace

void Job::enter() {
  if (!started_ || deferred_ || busy_ || !waiter_) return;
  sleep_timer_.stop();
  busy_ = true;
  auto h = std::exchange(waiter_, {});
  // Never inside the caller's stack (a QMP command, a timer callback).
  loop_.post([h] { h.resume(); });
}

Task<void> Job::co_do_yield(std::optional<uint64_t> ns) {
  if (ns) sleep_timer_.start(*ns, [this] { enter(); });
  busy_ = false;
  on_idle();
  co_await JobYield{&waiter_};
  last_turn_ns_ = Loop::now_ns();
}

Task<void> Job::co_pause_point() {
  if (pause_count_ == 0 || is_cancelled()) {
    if (Loop::now_ns() - last_turn_ns_ >= yield_interval_ns_) {
      co_await loop_.co_yield_now();
      last_turn_ns_ = Loop::now_ns();
    }
    co_return;
  }
  JobStatus before = status_;
  transition(before == JobStatus::kReady ? JobStatus::kStandby : JobStatus::kPaused);
  paused_ = true;
  while (pause_count_ > 0 && !is_cancelled()) co_await co_do_yield(std::nullopt);
  paused_ = false;
  transition(before);
}

Task<void> Job::co_sleep_ns(uint64_t ns) {
  if (is_cancelled()) co_return;
  if (pause_count_ == 0) co_await co_do_yield(ns);
  co_await co_pause_point();
}

Task<void> Job::co_yield_job() {
  if (is_cancelled()) co_return;
  if (pause_count_ == 0) co_await co_do_yield(std::nullopt);
  co_await co_pause_point();
}

// Running.

void Job::start() {
  if (status_ != JobStatus::kCreated || started_ || !registry_) {
    std::fprintf(stderr, "strata: job '%s' started twice or unregistered\n", id_.c_str());
    std::abort();
  }
  started_ = true;
  pause_count_--;
  busy_ = true;
  paused_ = false;
  last_turn_ns_ = Loop::now_ns();
  transition(JobStatus::kRunning);
  loop_.spawn(co_entry(shared_from_this()));
}

Task<void> Job::co_entry(std::shared_ptr<Job> self) {
  co_await self->co_pause_point();
  auto r = co_await self->co_run();
  if (!r && !self->error_) self->error_ = self->run_error(std::move(r).error());
  self->deferred_ = true;
  self->busy_ = false;
  self->on_idle();
  co_await self->co_completed();
}

void Job::transition_to_ready() {
  transition(JobStatus::kReady);
  notify(JobEventKind::kReady);
}

// Verbs that end the job.

void Job::cancel_async(bool force) {
  force = on_cancel(force);
  if (user_paused_) {
    on_user_resume();
    user_paused_ = false;
    pause_count_--;
  }
  // A soft cancel after the run ended changes nothing.
  if (force || !deferred_) {
    cancelled_ = true;
    force_cancel_ |= force;
  }
  if (started_) on_interrupt();
}

Task<void> Job::co_cancel(bool force) {
  auto self = shared_from_this();
  if (status_ == JobStatus::kConcluded) {
    co_await co_do_dismiss();
    co_return;
  }
  cancel_async(force);
  if (!started_) {
    co_await co_completed();
  } else if (deferred_) {
    if (!is_cancelled() || !txn_) co_return;
    auto txn = txn_;
    auto guard = co_await txn->lock().co_scoped_lock();
    if (txn_ == txn) co_await txn->co_abort_locked(*this);
  } else {
    enter();
  }
}

Task<Result<void>> Job::co_user_cancel(bool force) {
  STRATA_CO_TRY(check_verb(JobVerb::kCancel));
  co_await co_cancel(force);
  co_return Result<void>{};
}

Result<void> Job::complete() {
  STRATA_TRY(check_verb(JobVerb::kComplete));
  if (cancel_requested() || !can_complete()) {
    return Error{EINVAL, "The active block job '" + id_ + "' cannot be completed"};
  }
  return on_complete();
}

Task<Result<void>> Job::co_finalize() {
  STRATA_CO_TRY(check_verb(JobVerb::kFinalize));
  auto self = shared_from_this();
  auto txn = txn_;
  auto guard = co_await txn->lock().co_scoped_lock();
  // The state may have moved while the lock was busy.
  STRATA_CO_TRY(check_verb(JobVerb::kFinalize));
  co_await txn->co_finalize_locked(*this);
  co_return Result<void>{};
}

Task<Result<void>> Job::co_dismiss() {
  STRATA_CO_TRY(check_verb(JobVerb::kDismiss));
  co_await co_do_dismiss();
  co_return Result<void>{};
}

Task<void> Job::co_early_fail() {
  if (status_ != JobStatus::kCreated) {
    std::fprintf(stderr, "strata: job '%s': early fail after start\n", id_.c_str());
    std::abort();
  }
  co_await co_do_dismiss();
}

Task<void> Job::co_do_dismiss() {
  auto self = shared_from_this();
  busy_ = false;
  paused_ = false;
  deferred_ = true;
  if (txn_) txn_->remove(this);
  txn_.reset();
  transition(JobStatus::kNull);
  if (registry_) registry_->remove(this);
  co_await co_release();
}

Task<void> Job::co_wait_until(bool (*done)(const Job&)) {
  while (!done(*this)) co_await state_waiters_.wait();
}

Task<void> Job::co_cancel_sync(bool force) {
  auto self = shared_from_this();
  co_await co_cancel(force);
  co_await co_wait_until([](const Job& j) {
    return j.status_ == JobStatus::kConcluded || j.status_ == JobStatus::kNull;
  });
}

}  // namespace strata
