// Test job types and an event recorder for the job core tests, in the
// manner of QEMU's tests/unit/test-blockjob.c: a job that yields until the
// test tells it to finish, can go ready, fail, hit I/O errors, and records
// which finalization hooks ran.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/loop.h"
#include "jobs/block_job.h"
#include "jobs/job_registry.h"
#include "strata/engine.h"

namespace strata::testing {

struct TestScript {
  bool go_ready = false;     // ready at once, then wait for complete/cancel
  bool soft_cancel = false;  // a soft cancel in ready finishes without error
  bool can_complete = true;
  std::optional<Error> run_error;      // run returns this when finishing
  std::optional<Error> prepare_error;  // prepare fails with this
  int io_errors = 0;                   // I/O errors before finishing
  int io_errno = EIO;
  bool io_read = false;
};

class TestJob : public BlockJob {
 public:
  TestJob(Engine& engine, JobOptions options, TestScript script, std::vector<std::string>* hooks)
      : BlockJob(engine, std::move(options)), script_(std::move(script)), hooks_(hooks) {}

  std::string_view type() const override { return "mirror"; }

  // The test lets the run coroutine finish.
  void finish() {
    finish_ = true;
    enter();
  }
  int retries() const { return retries_; }
  int ignored() const { return ignored_; }

  Task<Result<void>> co_run() override {
    progress_set_remaining(1);
    if (script_.go_ready) transition_to_ready();
    while (!finish_) {
      if (is_cancelled() || (is_ready() && cancel_requested())) break;
      if (script_.io_errors > 0) {
        script_.io_errors--;
        Error error{script_.io_errno, "I/O error"};
        auto d = co_await co_handle_error(error, script_.io_read);
        if (d == ErrorDecision::kFail) co_return Error{script_.io_errno, "I/O error"};
        if (d == ErrorDecision::kRetry) retries_++;
        if (d == ErrorDecision::kIgnore) ignored_++;
        continue;
      }
      co_await co_yield_job();
    }
    progress_update(1);
    if (script_.run_error && !is_cancelled()) co_return *script_.run_error;
    co_return Result<void>{};
  }
  Task<Result<void>> co_prepare() override {
    record("prepare");
    if (script_.prepare_error) co_return *script_.prepare_error;
    co_return Result<void>{};
  }
  Task<void> co_commit() override {
    record("commit");
    co_return;
  }
  Task<void> co_abort() override {
    record("abort");
    co_return;
  }
  Task<void> co_clean() override {
    record("clean");
    co_return;
  }
  bool can_complete() const override { return script_.can_complete; }
  Result<void> on_complete() override {
    finish();
    return {};
  }
  bool on_cancel(bool force) override { return force || !(script_.soft_cancel && is_ready()); }

 private:
  void record(const std::string& what) {
    if (hooks_) hooks_->push_back(id() + ":" + what);
  }
  TestScript script_;
  std::vector<std::string>* hooks_;
  bool finish_ = false;
  int retries_ = 0;
  int ignored_ = 0;
};

// Records every event as text: "j:created", "j:READY", "j:COMPLETED",
// "j:COMPLETED:<error>", "j:CANCELLED", "j:PENDING", "j:ERROR:write:stop".
class EventLog {
 public:
  explicit EventLog(JobRegistry& registry) : registry_(registry) {
    id_ = registry.add_listener([this](const JobEvent& e) { record(e); });
  }
  ~EventLog() { registry_.remove_listener(id_); }
  std::vector<std::string> take() { return std::exchange(events_, {}); }
  const std::vector<std::string>& events() const { return events_; }

 private:
  void record(const JobEvent& e) {
    std::string p = e.job.id() + ":";
    switch (e.kind) {
      case JobEventKind::kStatusChange:
        events_.push_back(p + to_string(e.status));
        break;
      case JobEventKind::kReady:
        events_.push_back(p + "READY");
        break;
      case JobEventKind::kPending:
        events_.push_back(p + "PENDING");
        break;
      case JobEventKind::kCompleted:
        events_.push_back(p + "COMPLETED" +
                          (e.job.error() ? ":" + e.job.error()->message : std::string()));
        break;
      case JobEventKind::kCancelled:
        events_.push_back(p + "CANCELLED");
        break;
      case JobEventKind::kError:
        events_.push_back(p + "ERROR:" + (e.is_read ? "read:" : "write:") + to_string(e.action));
        break;
    }
  }
  JobRegistry& registry_;
  uint64_t id_;
  std::vector<std::string> events_;
};

class JobTest : public ::testing::Test {
 protected:
  JobTest() : log_(engine_.jobs()) {}

  // Creates and registers a job (not started).
  std::shared_ptr<TestJob> make(const std::string& id, TestScript script = {},
                                bool auto_finalize = true, bool auto_dismiss = true,
                                std::shared_ptr<JobTxn> txn = nullptr) {
    JobOptions o{.id = id, .auto_finalize = auto_finalize, .auto_dismiss = auto_dismiss};
    auto job = std::make_shared<TestJob>(engine_, o, std::move(script), &hooks_);
    auto r = engine_.jobs().add(job, std::move(txn));
    EXPECT_TRUE(r.ok()) << r.error().message;
    return job;
  }
  std::shared_ptr<TestJob> start(const std::string& id, TestScript script = {},
                                 bool auto_finalize = true, bool auto_dismiss = true) {
    auto job = make(id, std::move(script), auto_finalize, auto_dismiss);
    job->start();
    return job;
  }
  // Runs the loop until `done` holds (or fails the test after many turns).
  void run_until(const std::function<bool()>& done) {
    engine_.run(co_until(done));
    ASSERT_TRUE(done());
  }
  void wait_status(const Job& job, JobStatus s) {
    run_until([&] { return job.status() == s; });
  }
  // Runs the loop until nothing more happens for a while (all posted work).
  void settle() { engine_.run(co_settle()); }
  template <typename T>
  T run(Task<T> task) {
    return engine_.run(std::move(task));
  }

  Engine engine_;
  EventLog log_;
  std::vector<std::string> hooks_;

 private:
  Task<void> co_until(std::function<bool()> done) {
    for (int i = 0; i < 20000 && !done(); i++) co_await engine_.loop().co_sleep(1);
  }
  Task<void> co_settle() {
    for (int i = 0; i < 20; i++) co_await engine_.loop().co_yield_now();
  }
};

using Events = std::vector<std::string>;

}  // namespace strata::testing
