// Job: a long-running operation with QEMU's job state machine (job.c):
// states, the transition table, the verb table, pause counting, cancel,
// complete, finalize and dismiss, transactions, progress and events.
//
// States (JobStatus) and transitions (JobSTT), as in QEMU:
//
//   undefined -> created
//   created   -> running, aborting, null
//   running   -> paused, ready, waiting, aborting
//   paused    -> running
//   ready     -> standby, waiting, aborting
//   standby   -> ready
//   waiting   -> pending, aborting
//   pending   -> aborting, concluded
//   aborting  -> aborting, concluded
//   concluded -> null
//
// Verbs (JobVerbTable): cancel in created..pending (not aborting,
// concluded, null); pause, resume and set-speed in created, running,
// paused, ready, standby; complete in ready and standby; finalize in
// pending; dismiss in concluded. Any other verb is refused with "Job '%s'
// in state '%s' cannot accept command verb '%s'".
//
// Lifecycle: a job is added to the JobRegistry (created), given its
// resources by its type, then start()ed (running); its run coroutine works,
// calling co_pause_point() often. When run returns, the job waits for the
// other jobs of its transaction (waiting), then all become pending; with
// auto-finalize they are finalized at once (prepare, then commit or abort,
// then clean), otherwise on finalize. A finalized job is concluded, and
// dismissed (null, removed from the registry) at once with auto-dismiss or
// later by dismiss. A failed or cancelled job goes aborting -> concluded;
// one failure in a transaction force-cancels the others.
//
// Pausing: pause_count counts internal pauses (drain: pause()/resume())
// and one user pause (user_pause()/user_resume(), or an error policy
// `stop`). The job parks at its next pause point while the count is
// non-zero: paused, or standby when it was ready.
//
// Writing a job type (the run coroutine and the optional hooks):
//
//   class CountJob : public Job {
//    public:
//     using Job::Job;
//     std::string_view type() const override { return "commit"; }
//     Task<Result<void>> co_run() override {
//       progress_set_remaining(10);
//       for (int i = 0; i < 10; i++) {
//         co_await co_pause_point();        // parks while paused
//         if (is_cancelled()) co_return Result<void>{};  // the core reports it
//         co_await co_sleep_ns(1000000);    // woken early by pause/cancel
//         progress_update(1);
//       }
//       co_return Result<void>{};
//     }
//     Task<Result<void>> co_prepare() override { ... }  // may drain, change the graph
//     Task<void> co_commit() override { ... }           // success of the transaction
//     Task<void> co_abort() override { ... }            // failure or cancel
//     Task<void> co_clean() override { ... }            // after either
//   };
//
// A job that converges (mirror, active commit) calls transition_to_ready()
// and overrides can_complete()/on_complete() (job-complete asks it to
// finish) and on_cancel() (what a soft cancel in ready means: return false
// to finish without pivot instead of being cancelled). on_interrupt() runs
// when a pause or cancel is requested, for work that waits on something
// other than the job's own sleep (in-flight I/O).
//
// Fairness: the loop is shared with the embedder and every other user. A
// job must not run more than kMaxBusyNs of loop time without returning to
// the loop; co_pause_point() yields (Loop::co_yield_now) when that much
// time passed since the job last gave the loop a turn, so a copy whose I/O
// completes synchronously still lets the loop run. Call it at least once
// per chunk.
//
// Thread rules: loop-thread only. Jobs are shared_ptr-owned: the registry
// holds each job until it is dismissed, and the running coroutine holds it
// until it ends.
#pragma once

#include <coroutine>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/loop.h"
#include "base/sync.h"
#include "base/timer.h"
#include "jobs/job_types.h"
#include "strata/result.h"
#include "strata/task.h"

namespace strata {

class Engine;
class JobRegistry;
class JobTxn;
class BlockJob;

// How a job is created.
struct JobOptions {
  // Required unless internal ("An explicit job ID is required").
  std::optional<std::string> id;
  bool internal = false;  // no id, no events, not listed by queries
  bool auto_finalize = true;
  bool auto_dismiss = true;
};

class Job : public std::enable_shared_from_this<Job> {
 public:
  // Longest stretch of loop time a job runs without a turn for the loop.
  static constexpr uint64_t kMaxBusyNs = 10 * 1000 * 1000;

  Job(Engine& engine, JobOptions options);
  virtual ~Job();
  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;

  // --- The job type's part ---------------------------------------------
  // QEMU's JobType name ("commit", "stream", "mirror", "backup", "create",
  // "amend").
  virtual std::string_view type() const = 0;
  virtual Task<Result<void>> co_run() = 0;
  virtual Task<Result<void>> co_prepare() { co_return Result<void>{}; }
  virtual Task<void> co_commit() { co_return; }
  virtual Task<void> co_abort() { co_return; }
  virtual Task<void> co_clean() { co_return; }
  // Jobs that go ready: whether complete is possible and what it does.
  virtual bool can_complete() const { return false; }
  virtual Result<void> on_complete() { return {}; }
  // A cancel request; returns whether it is a forced cancel. The default
  // (no soft cancel) treats every cancel as forced.
  virtual bool on_cancel(bool force) { return true; }
  // A pause or cancel was requested: wake work waiting elsewhere.
  virtual void on_interrupt() {}
  // The run coroutine stopped running job code: it sleeps, yields, parks
  // at a pause point, or has ended (BlockJob tells drains waiting for it).
  virtual void on_idle() {}
  // The user resumed the job (BlockJob resets its io-status).
  virtual void on_user_resume() {}
  // Last step of dismiss: release what the job holds (graph edges).
  virtual Task<void> co_release() { co_return; }
  // The error a failed run reports (query-jobs, BLOCK_JOB_COMPLETED).
  virtual Error run_error(Error error) const { return error; }
  virtual BlockJob* as_block_job() { return nullptr; }
  virtual const BlockJob* as_block_job() const { return nullptr; }

  // --- State -----------------------------------------------------------
  Engine& engine() const { return engine_; }
  const std::string& id() const { return id_; }
  bool is_internal() const { return internal_; }
  JobStatus status() const { return status_; }
  bool busy() const { return busy_; }
  bool paused() const { return paused_; }  // parked at a pause point
  int pause_count() const { return pause_count_; }
  bool user_paused() const { return user_paused_; }
  bool auto_finalize() const { return auto_finalize_; }
  bool auto_dismiss() const { return auto_dismiss_; }
  bool started() const { return started_; }
  bool is_ready() const;      // ready or standby
  bool is_completed() const;  // waiting and after
  // A forced cancel (QEMU's job_is_cancelled); cancel_requested() is any.
  bool is_cancelled() const { return force_cancel_; }
  bool cancel_requested() const { return cancelled_; }
  // The error the job ended with (run, prepare, cancel, a transaction).
  const std::optional<Error>& error() const { return error_; }
  uint64_t progress_current() const { return progress_current_; }
  uint64_t progress_total() const { return progress_total_; }
  const std::shared_ptr<JobTxn>& txn() const { return txn_; }

  // --- Verbs (QMP), each checked against the verb table ------------------
  Result<void> check_verb(JobVerb verb) const;
  Result<void> user_pause();
  Result<void> user_resume();
  // force: job-cancel and block-job-cancel force=true.
  Task<Result<void>> co_user_cancel(bool force);
  Result<void> complete();
  Task<Result<void>> co_finalize();
  Task<Result<void>> co_dismiss();

  // --- Engine-side control ---------------------------------------------
  // Starts the run coroutine (created -> running).
  void start();
  // Internal pause (drain) and its release; they nest with the user pause.
  void pause();
  void resume();
  // Cancels and waits until the job is concluded or gone (quit).
  Task<void> co_cancel_sync(bool force);
  // Ends a job that failed before start: created -> null, nothing left.
  Task<void> co_early_fail();

  // --- For the run coroutine -------------------------------------------
  Task<void> co_pause_point();
  // Sleeps `ns` unless woken by pause, cancel, resume or enter(); returns
  // at once when cancelled. Parks at the pause point afterwards.
  Task<void> co_sleep_ns(uint64_t ns);
  // Parks until enter() (or pause/cancel) wakes the job.
  Task<void> co_yield_job();
  // Wakes the job if it sleeps or yields (not if parked by a pause).
  void enter();
  void progress_update(uint64_t done) { progress_current_ += done; }
  void progress_set_remaining(uint64_t n) { progress_total_ = progress_current_ + n; }
  void progress_increase_remaining(uint64_t n) { progress_total_ += n; }
  void transition_to_ready();

 protected:
  // Emits an event to the registry's listeners (not for internal jobs).
  void notify(JobEventKind kind, bool is_read = false, ErrorAction action = ErrorAction::kReport);
  void set_user_paused_by_error();
  // True while the run coroutine sleeps on its timer (co_sleep_ns).
  bool sleeping() const { return sleep_timer_.pending(); }
  // Tests shorten the fairness interval (kMaxBusyNs by default).
  void set_yield_interval_ns(uint64_t ns) { yield_interval_ns_ = ns; }

 private:
  friend class JobRegistry;
  friend class JobTxn;
  void transition(JobStatus to);
  void attach(JobRegistry* registry, std::shared_ptr<JobTxn> txn);
  static Task<void> co_entry(std::shared_ptr<Job> self);
  Task<void> co_do_yield(std::optional<uint64_t> ns);
  Task<void> co_completed();
  void update_rc();
  void cancel_async(bool force);
  Task<void> co_cancel(bool force);
  Task<Result<void>> co_prepare_one();
  Task<void> co_finalize_single();
  Task<void> co_conclude();
  Task<void> co_do_dismiss();
  Task<void> co_wait_until(bool (*done)(const Job&));
  void maybe_wake_user_resume();

  Engine& engine_;
  Loop& loop_;
  JobRegistry* registry_ = nullptr;
  std::shared_ptr<JobTxn> txn_;
  std::string id_;
  bool has_id_;
  bool internal_;
  bool auto_finalize_;
  bool auto_dismiss_;
  JobStatus status_ = JobStatus::kUndefined;
  bool started_ = false;
  bool busy_ = false;
  bool paused_ = true;
  int pause_count_ = 1;
  bool user_paused_ = false;
  bool cancelled_ = false;
  bool force_cancel_ = false;
  bool deferred_ = false;  // run returned; completion is under way
  std::optional<Error> error_;
  uint64_t progress_current_ = 0;
  uint64_t progress_total_ = 0;
  std::coroutine_handle<> waiter_;  // the run coroutine, while yielded
  Timer sleep_timer_;
  CoQueue state_waiters_;  // woken on every transition
  uint64_t last_turn_ns_ = 0;
  uint64_t yield_interval_ns_ = kMaxBusyNs;
};

}  // namespace strata
