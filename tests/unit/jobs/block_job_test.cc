// BlockJob: error policies with BLOCK_JOB_ERROR, io-status, stop then
// resume retrying, speed, and the nodes a job holds.
#include "jobs/block_job.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "block/core/graph.h"
#include "tests/unit/jobs/test_jobs.h"

namespace strata::testing {
namespace {

class BlockJobTest : public JobTest {
 protected:
  std::shared_ptr<TestJob> with_policy(const std::string& id, TestScript script, OnError source,
                                       OnError target) {
    auto job = make(id, std::move(script));
    job->set_error_policies(source, target);
    job->start();
    return job;
  }
  // Starts `job` under `speed` on a rate clock that stands still, and runs
  // the loop until `first` bytes are done (what the first second allows).
  template <typename J>
  void start_paced(const std::shared_ptr<J>& job, uint64_t speed, uint64_t first) {
    job->set_rate_clock([] { return uint64_t{1'000'000'000}; });
    ASSERT_TRUE(engine_.jobs().add(job).ok());
    ASSERT_TRUE(job->set_speed(speed).ok());
    job->start();
    run_until([&] { return job->progress_current() == first; });
    settle();
  }
};

TEST_F(BlockJobTest, ReportFailsTheJob) {
  auto job = with_policy("j", {.io_errors = 1}, OnError::kReport, OnError::kReport);
  wait_status(*job, JobStatus::kNull);
  EXPECT_EQ(log_.take(), (Events{"j:created", "j:running", "j:ERROR:write:report", "j:aborting",
                                 "j:COMPLETED:Input/output error", "j:concluded", "j:null"}));
}

TEST_F(BlockJobTest, IgnoreCarriesOn) {
  auto job =
      with_policy("j", {.io_errors = 2, .io_read = true}, OnError::kIgnore, OnError::kReport);
  run_until([&] { return job->ignored() == 2; });
  EXPECT_EQ(job->io_status(), IoStatus::kOk);
  job->finish();
  wait_status(*job, JobStatus::kNull);
  auto events = log_.take();
  EXPECT_EQ(events[2], "j:ERROR:read:ignore");
  EXPECT_EQ(events[3], "j:ERROR:read:ignore");
  EXPECT_EQ(events.back(), "j:null");
}

TEST_F(BlockJobTest, StopPausesThenResumeRetries) {
  auto job = with_policy("j", {.io_errors = 1}, OnError::kReport, OnError::kStop);
  wait_status(*job, JobStatus::kPaused);
  EXPECT_TRUE(job->user_paused());
  EXPECT_EQ(job->io_status(), IoStatus::kFailed);
  EXPECT_EQ(job->retries(), 0);
  ASSERT_TRUE(job->user_resume().ok());
  EXPECT_EQ(job->io_status(), IoStatus::kOk);
  run_until([&] { return job->retries() == 1; });
  job->finish();
  wait_status(*job, JobStatus::kNull);
  EXPECT_EQ(log_.take(),
            (Events{"j:created", "j:running", "j:ERROR:write:stop", "j:paused", "j:running",
                    "j:waiting", "j:pending", "j:COMPLETED", "j:concluded", "j:null"}));
}

TEST_F(BlockJobTest, StopInReadyGivesStandbyAndStaysReady) {
  auto job = with_policy("j", {.go_ready = true, .io_errors = 1}, OnError::kStop, OnError::kStop);
  wait_status(*job, JobStatus::kStandby);
  EXPECT_TRUE(job->is_ready());
  ASSERT_TRUE(job->user_resume().ok());
  wait_status(*job, JobStatus::kReady);
  ASSERT_TRUE(job->complete().ok());
  wait_status(*job, JobStatus::kNull);
  EXPECT_EQ(log_.take(), (Events{"j:created", "j:running", "j:ready", "j:READY",
                                 "j:ERROR:write:stop", "j:standby", "j:ready", "j:waiting",
                                 "j:pending", "j:COMPLETED", "j:concluded", "j:null"}));
}

TEST_F(BlockJobTest, EnospcStopsOnlyOnNoSpace) {
  auto full =
      with_policy("f", {.io_errors = 1, .io_errno = ENOSPC}, OnError::kEnospc, OnError::kEnospc);
  wait_status(*full, JobStatus::kPaused);
  EXPECT_EQ(full->io_status(), IoStatus::kNoSpace);
  auto other = with_policy("o", {.io_errors = 1}, OnError::kEnospc, OnError::kEnospc);
  wait_status(*other, JobStatus::kNull);
  EXPECT_EQ(other->error()->message, "Input/output error");  // errno text, as QEMU
  // A stopped job cancelled while it waits ends cancelled.
  ASSERT_TRUE(run(full->co_user_cancel(true)).ok());
  wait_status(*full, JobStatus::kNull);
  auto events = log_.take();
  EXPECT_NE(std::find(events.begin(), events.end(), "f:ERROR:write:stop"), events.end());
  EXPECT_NE(std::find(events.begin(), events.end(), "o:ERROR:write:report"), events.end());
  EXPECT_EQ(events.back(), "f:null");
}

TEST_F(BlockJobTest, SoftCancelOfAUserPausedJobIsStillACancel) {
  // The QMP layer refuses it ("is currently paused"); the core clears the
  // user pause on any cancel, as QEMU's job_cancel_async does.
  auto job = start("j");
  ASSERT_TRUE(job->user_pause().ok());
  wait_status(*job, JobStatus::kPaused);
  ASSERT_TRUE(run(job->co_user_cancel(false)).ok());
  wait_status(*job, JobStatus::kNull);
}

TEST_F(BlockJobTest, SetSpeed) {
  auto job = make("j");
  EXPECT_EQ(job->set_speed(-1).error().message, "Parameter 'speed' expects a non-negative value");
  ASSERT_TRUE(job->set_speed(1 << 20).ok());
  EXPECT_EQ(job->speed(), 1u << 20);
  job->start();
  job->finish();
  wait_status(*job, JobStatus::kNull);
  EXPECT_EQ(job->set_speed(5).error().message,
            "Job 'j' in state 'null' cannot accept command verb 'set-speed'");
}

// A job that copies `chunks` chunks of `chunk` bytes under the speed limit.
class PacedJob : public BlockJob {
 public:
  PacedJob(Engine& e, JobOptions o, int chunks, uint64_t chunk)
      : BlockJob(e, std::move(o)), chunks_(chunks), chunk_(chunk) {}
  std::string_view type() const override { return "stream"; }
  Task<Result<void>> co_run() override {
    progress_set_remaining(chunks_ * chunk_);
    for (int i = 0; i < chunks_ && !is_cancelled(); i++) {
      co_await co_rate_limit(chunk_);
      if (is_cancelled()) break;
      progress_update(chunk_);
      co_await co_pause_point();
    }
    co_return Result<void>{};
  }

 private:
  int chunks_;
  uint64_t chunk_;
};

TEST_F(BlockJobTest, RateLimitedJobSleepsAndCancelWakesIt) {
  auto job = std::make_shared<PacedJob>(engine_, JobOptions{.id = "p"}, 10, 1000);
  // Two chunks fit in the first second; the third waits for the clock.
  start_paced(job, 2000, 2000);
  EXPECT_EQ(job->progress_current(), 2000u);
  EXPECT_FALSE(job->busy());
  // Raising the limit to unlimited wakes the sleep.
  ASSERT_TRUE(job->set_speed(0).ok());
  run_until([&] { return job->status() == JobStatus::kNull; });
  EXPECT_EQ(job->progress_current(), 10000u);
}

TEST_F(BlockJobTest, CancelCutsARateLimitSleepShort) {
  auto job = std::make_shared<PacedJob>(engine_, JobOptions{.id = "p"}, 10, 1000);
  start_paced(job, 1000, 1000);
  ASSERT_TRUE(run(job->co_user_cancel(true)).ok());
  wait_status(*job, JobStatus::kNull);
  EXPECT_EQ(job->progress_current(), 1000u);
}

// The same with `workers` coroutines copying at once, as the copy engine's
// workers each wait on the limit (co_throttle) before their chunk.
class ParallelPacedJob : public BlockJob {
 public:
  ParallelPacedJob(Engine& e, JobOptions o, int workers, uint64_t chunk)
      : BlockJob(e, std::move(o)), workers_(workers), chunk_(chunk), group_(e.loop()) {}
  std::string_view type() const override { return "commit"; }
  Task<Result<void>> co_run() override {
    progress_set_remaining(workers_ * kChunksEach * chunk_);
    for (int i = 0; i < workers_; i++) group_.spawn(co_worker());
    co_await group_.co_join();
    co_return Result<void>{};
  }
  static constexpr int kChunksEach = 3;

 private:
  Task<void> co_worker() {
    for (int i = 0; i < kChunksEach && !is_cancelled(); i++) {
      co_await co_throttle(chunk_);
      if (!is_cancelled()) progress_update(chunk_);
    }
  }
  int workers_;
  uint64_t chunk_;
  TaskGroup group_;
};

TEST_F(BlockJobTest, RateLimitWithSeveralWaitersFinishes) {
  auto job = std::make_shared<ParallelPacedJob>(engine_, JobOptions{.id = "p"}, 4, 1000);
  start_paced(job, 1000, 1000);
  EXPECT_EQ(job->progress_current(), 1000u);  // the other workers wait
  ASSERT_TRUE(job->set_speed(0).ok());
  wait_status(*job, JobStatus::kNull);
  EXPECT_EQ(job->progress_current(), 12000u);
}

TEST_F(BlockJobTest, CancelEndsAJobWithSeveralRateLimitWaiters) {
  auto job = std::make_shared<ParallelPacedJob>(engine_, JobOptions{.id = "p"}, 4, 1000);
  start_paced(job, 1000, 1000);
  ASSERT_TRUE(run(job->co_user_cancel(true)).ok());
  wait_status(*job, JobStatus::kNull);
  EXPECT_EQ(job->progress_current(), 1000u);
}

TEST_F(BlockJobTest, HeldNodesBlockOtherUsersUntilDismissed) {
  auto node = run(engine_.graph().co_add(
      nlohmann::json{{"driver", "null-co"}, {"node-name", "n"}, {"size", 65536}}));
  ASSERT_TRUE(node.ok()) << node.error().message;
  auto job = make("j", {}, true, false);
  ASSERT_TRUE(
      job->add_node(**node, "main node", kPermConsistentRead | kPermWrite, kPermConsistentRead)
          .ok());
  ASSERT_EQ(job->nodes().size(), 1u);
  EXPECT_EQ(job->nodes()[0].edge->user(), "mirror job 'j'");
  // Another writer is refused while the job holds the node.
  auto other = engine_.graph().attach_root(**node, "test", kPermWrite, kPermAll);
  EXPECT_FALSE(other.ok());
  job->start();
  job->finish();
  wait_status(*job, JobStatus::kConcluded);
  EXPECT_FALSE(run(engine_.graph().co_del("n")).ok());
  ASSERT_TRUE(run(job->co_dismiss()).ok());
  EXPECT_TRUE(job->nodes().empty());
  EXPECT_TRUE(run(engine_.graph().co_del("n")).ok());
}

}  // namespace
}  // namespace strata::testing
