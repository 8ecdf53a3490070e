// The job state machine: transitions, events in QEMU's order, verbs
// refused with QEMU's message, pause counting, READY/STANDBY, cancel.
#include "jobs/job.h"

#include <gtest/gtest.h>

#include "tests/unit/jobs/test_jobs.h"

namespace strata::testing {
namespace {

// QEMU's JobVerbTable, written out per state from qapi/job.json's
// documentation: which verbs each state accepts.
const char* accepted_verbs(JobStatus s) {
  switch (s) {
    case JobStatus::kCreated:
    case JobStatus::kRunning:
    case JobStatus::kPaused:
      return "cancel pause resume set-speed change";
    case JobStatus::kReady:
    case JobStatus::kStandby:
      return "cancel pause resume set-speed complete change";
    case JobStatus::kWaiting:
      return "cancel";
    case JobStatus::kPending:
      return "cancel finalize";
    case JobStatus::kConcluded:
      return "dismiss";
    default:
      return "";
  }
}

void expect_verbs(const Job& job) {
  std::string accepted = std::string(" ") + accepted_verbs(job.status()) + " ";
  for (int v = 0; v < kJobVerbCount; v++) {
    auto verb = static_cast<JobVerb>(v);
    auto r = job.check_verb(verb);
    bool expected = accepted.find(std::string(" ") + to_string(verb) + " ") != std::string::npos;
    EXPECT_EQ(r.ok(), expected) << to_string(job.status()) << " " << to_string(verb);
    if (!r.ok()) {
      EXPECT_EQ(r.error().message, "Job '" + job.id() + "' in state '" + to_string(job.status()) +
                                       "' cannot accept command verb '" + to_string(verb) + "'");
    }
  }
}

TEST_F(JobTest, SuccessGoesThroughWaitingPendingConcluded) {
  auto job = start("j");
  EXPECT_EQ(job->status(), JobStatus::kRunning);
  EXPECT_EQ(job->progress_total(), 1u);
  job->finish();
  wait_status(*job, JobStatus::kNull);
  EXPECT_EQ(log_.take(), (Events{"j:created", "j:running", "j:waiting", "j:pending", "j:COMPLETED",
                                 "j:concluded", "j:null"}));
  EXPECT_EQ(hooks_, (Events{"j:prepare", "j:commit", "j:clean"}));
  EXPECT_EQ(job->progress_current(), 1u);
  EXPECT_EQ(engine_.jobs().find("j"), nullptr);
}

TEST_F(JobTest, FailureGoesThroughAborting) {
  auto job = start("j", {.run_error = Error{EIO, "it broke"}});
  job->finish();
  wait_status(*job, JobStatus::kNull);
  EXPECT_EQ(log_.take(), (Events{"j:created", "j:running", "j:aborting", "j:COMPLETED:Input/output error",
                                 "j:concluded", "j:null"}));
  EXPECT_EQ(hooks_, (Events{"j:abort", "j:clean"}));
}

TEST_F(JobTest, ManualFinalizeWaitsInPending) {
  auto job = start("j", {}, /*auto_finalize=*/false);
  job->finish();
  wait_status(*job, JobStatus::kPending);
  settle();
  EXPECT_EQ(job->status(), JobStatus::kPending);
  expect_verbs(*job);
  EXPECT_EQ(log_.take(), (Events{"j:created", "j:running", "j:waiting", "j:pending", "j:PENDING"}));
  EXPECT_TRUE(hooks_.empty());
  auto r = run(job->co_finalize());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(log_.take(), (Events{"j:COMPLETED", "j:concluded", "j:null"}));
  EXPECT_EQ(hooks_, (Events{"j:prepare", "j:commit", "j:clean"}));
}

TEST_F(JobTest, ManualDismissKeepsConcludedJob) {
  auto job = start("j", {}, true, /*auto_dismiss=*/false);
  job->finish();
  wait_status(*job, JobStatus::kConcluded);
  settle();
  EXPECT_EQ(job->status(), JobStatus::kConcluded);
  EXPECT_EQ(engine_.jobs().find("j"), job);
  expect_verbs(*job);
  EXPECT_EQ(run(job->co_user_cancel(true)).error().message,
            "Job 'j' in state 'concluded' cannot accept command verb 'cancel'");
  ASSERT_TRUE(run(job->co_dismiss()).ok());
  EXPECT_EQ(job->status(), JobStatus::kNull);
  EXPECT_EQ(engine_.jobs().find("j"), nullptr);
  EXPECT_EQ(log_.take().back(), "j:null");
}

TEST_F(JobTest, VerbsInEveryState) {
  // created
  auto c = make("c");
  expect_verbs(*c);
  // running, paused
  auto r = start("r");
  expect_verbs(*r);
  ASSERT_TRUE(r->user_pause().ok());
  wait_status(*r, JobStatus::kPaused);
  expect_verbs(*r);
  // ready, standby
  auto y = start("y", {.go_ready = true});
  EXPECT_EQ(y->status(), JobStatus::kReady);
  expect_verbs(*y);
  ASSERT_TRUE(y->user_pause().ok());
  wait_status(*y, JobStatus::kStandby);
  expect_verbs(*y);
  // waiting: a transaction whose other job still runs
  auto txn = engine_.jobs().new_txn();
  auto w1 = make("w1", {}, true, true, txn);
  auto w2 = make("w2", {}, true, true, txn);
  w1->start();
  w2->start();
  w1->finish();
  wait_status(*w1, JobStatus::kWaiting);
  expect_verbs(*w1);
  // pending, concluded
  auto p = start("p", {}, false, false);
  p->finish();
  wait_status(*p, JobStatus::kPending);
  expect_verbs(*p);
  ASSERT_TRUE(run(p->co_finalize()).ok());
  EXPECT_EQ(p->status(), JobStatus::kConcluded);
  expect_verbs(*p);
  // Clean up.
  run(engine_.jobs().co_cancel_all());
  EXPECT_TRUE(engine_.jobs().list().empty());
}

TEST_F(JobTest, VerbsRefusedWithQemuMessages) {
  auto job = start("j");
  EXPECT_EQ(job->complete().error().message,
            "Job 'j' in state 'running' cannot accept command verb 'complete'");
  EXPECT_EQ(run(job->co_finalize()).error().message,
            "Job 'j' in state 'running' cannot accept command verb 'finalize'");
  EXPECT_EQ(run(job->co_dismiss()).error().message,
            "Job 'j' in state 'running' cannot accept command verb 'dismiss'");
  EXPECT_EQ(job->user_resume().error().message, "Can't resume a job that was not paused");
  ASSERT_TRUE(job->user_pause().ok());
  EXPECT_EQ(job->user_pause().error().message, "Job is already paused");
  ASSERT_TRUE(job->user_resume().ok());
  job->finish();
  wait_status(*job, JobStatus::kNull);
}

TEST_F(JobTest, PauseAndResumeWhileRunning) {
  auto job = start("j");
  ASSERT_TRUE(job->user_pause().ok());
  wait_status(*job, JobStatus::kPaused);
  EXPECT_TRUE(job->paused());
  EXPECT_FALSE(job->busy());
  ASSERT_TRUE(job->user_resume().ok());
  wait_status(*job, JobStatus::kRunning);
  job->finish();
  wait_status(*job, JobStatus::kNull);
  EXPECT_EQ(log_.take(), (Events{"j:created", "j:running", "j:paused", "j:running", "j:waiting",
                                 "j:pending", "j:COMPLETED", "j:concluded", "j:null"}));
}

TEST_F(JobTest, PauseInReadyGivesStandby) {
  auto job = start("j", {.go_ready = true});
  ASSERT_TRUE(job->user_pause().ok());
  wait_status(*job, JobStatus::kStandby);
  EXPECT_TRUE(job->is_ready());
  // complete is accepted on standby (QEMU 6.1 and later).
  ASSERT_TRUE(job->user_resume().ok());
  wait_status(*job, JobStatus::kReady);
  ASSERT_TRUE(job->complete().ok());
  wait_status(*job, JobStatus::kNull);
  EXPECT_EQ(log_.take(),
            (Events{"j:created", "j:running", "j:ready", "j:READY", "j:standby", "j:ready",
                    "j:waiting", "j:pending", "j:COMPLETED", "j:concluded", "j:null"}));
}

TEST_F(JobTest, PausedBeforeStartParksAtFirstPausePoint) {
  auto job = make("j");
  ASSERT_TRUE(job->user_pause().ok());
  job->start();
  wait_status(*job, JobStatus::kPaused);
  ASSERT_TRUE(job->user_resume().ok());
  job->finish();
  wait_status(*job, JobStatus::kNull);
  EXPECT_EQ(log_.take(), (Events{"j:created", "j:running", "j:paused", "j:running", "j:waiting",
                                 "j:pending", "j:COMPLETED", "j:concluded", "j:null"}));
}

TEST_F(JobTest, UserPauseAndInternalPauseNest) {
  auto job = start("j");
  ASSERT_TRUE(job->user_pause().ok());
  job->pause();  // a drain
  wait_status(*job, JobStatus::kPaused);
  EXPECT_EQ(job->pause_count(), 2);
  ASSERT_TRUE(job->user_resume().ok());
  settle();
  EXPECT_EQ(job->status(), JobStatus::kPaused);  // the drain still holds it
  // Only the user pause can be resumed by the user.
  EXPECT_EQ(job->user_resume().error().message, "Can't resume a job that was not paused");
  job->resume();
  wait_status(*job, JobStatus::kRunning);
  EXPECT_EQ(job->pause_count(), 0);
  job->finish();
  wait_status(*job, JobStatus::kNull);
}

TEST_F(JobTest, CompleteNeedsAJobThatCanComplete) {
  auto job = start("j", {.go_ready = true, .can_complete = false});
  EXPECT_EQ(job->complete().error().message, "The active block job 'j' cannot be completed");
  ASSERT_TRUE(run(job->co_user_cancel(true)).ok());
  wait_status(*job, JobStatus::kNull);
}

TEST_F(JobTest, CancelCreatedJobEmitsNoBlockJobEvent) {
  auto job = make("j");
  ASSERT_TRUE(run(job->co_user_cancel(true)).ok());
  EXPECT_EQ(job->status(), JobStatus::kNull);
  EXPECT_EQ(log_.take(), (Events{"j:created", "j:aborting", "j:concluded", "j:null"}));
  EXPECT_EQ(hooks_, (Events{"j:abort", "j:clean"}));
}

TEST_F(JobTest, CancelRunningJob) {
  auto job = start("j");
  ASSERT_TRUE(run(job->co_user_cancel(true)).ok());
  wait_status(*job, JobStatus::kNull);
  EXPECT_EQ(log_.take(), (Events{"j:created", "j:running", "j:aborting", "j:CANCELLED",
                                 "j:concluded", "j:null"}));
  EXPECT_EQ(job->error()->message, "Operation canceled");
}

TEST_F(JobTest, CancelPausedJobResumesItFirst) {
  auto job = start("j");
  ASSERT_TRUE(job->user_pause().ok());
  wait_status(*job, JobStatus::kPaused);
  ASSERT_TRUE(run(job->co_user_cancel(true)).ok());
  EXPECT_FALSE(job->user_paused());
  wait_status(*job, JobStatus::kNull);
  EXPECT_EQ(log_.take(), (Events{"j:created", "j:running", "j:paused", "j:running", "j:aborting",
                                 "j:CANCELLED", "j:concluded", "j:null"}));
}

TEST_F(JobTest, CancelReadyAndStandbyJobs) {
  auto y = start("y", {.go_ready = true, .soft_cancel = true});
  ASSERT_TRUE(run(y->co_user_cancel(true)).ok());
  wait_status(*y, JobStatus::kNull);
  auto s = start("s", {.go_ready = true, .soft_cancel = true});
  ASSERT_TRUE(s->user_pause().ok());
  wait_status(*s, JobStatus::kStandby);
  ASSERT_TRUE(run(s->co_user_cancel(true)).ok());
  wait_status(*s, JobStatus::kNull);
  EXPECT_EQ(log_.take(),
            (Events{"y:created", "y:running", "y:ready", "y:READY", "y:aborting", "y:CANCELLED",
                    "y:concluded", "y:null", "s:created", "s:running", "s:ready", "s:READY",
                    "s:standby", "s:ready", "s:aborting", "s:CANCELLED", "s:concluded", "s:null"}));
}

TEST_F(JobTest, SoftCancelInReadyCompletes) {
  auto job = start("j", {.go_ready = true, .soft_cancel = true});
  ASSERT_TRUE(run(job->co_user_cancel(false)).ok());
  EXPECT_TRUE(job->cancel_requested());
  EXPECT_FALSE(job->is_cancelled());
  // Complete is refused once a cancel was requested.
  EXPECT_EQ(job->complete().error().message, "The active block job 'j' cannot be completed");
  wait_status(*job, JobStatus::kNull);
  EXPECT_EQ(log_.take(), (Events{"j:created", "j:running", "j:ready", "j:READY", "j:waiting",
                                 "j:pending", "j:COMPLETED", "j:concluded", "j:null"}));
  EXPECT_FALSE(job->error());
}

TEST_F(JobTest, SoftCancelOfJobWithoutSoftCancelIsForced) {
  auto job = start("j", {.go_ready = true});
  ASSERT_TRUE(run(job->co_user_cancel(false)).ok());
  EXPECT_TRUE(job->is_cancelled());
  wait_status(*job, JobStatus::kNull);
  EXPECT_EQ(log_.take().at(4), "j:aborting");
}

TEST_F(JobTest, CancelWaitingJobAbortsItsTransaction) {
  auto txn = engine_.jobs().new_txn();
  auto a = make("a", {}, true, true, txn);
  auto b = make("b", {}, true, true, txn);
  a->start();
  b->start();
  a->finish();
  wait_status(*a, JobStatus::kWaiting);
  ASSERT_TRUE(run(a->co_user_cancel(true)).ok());
  wait_status(*b, JobStatus::kNull);
  wait_status(*a, JobStatus::kNull);
  auto events = log_.take();
  // b (newest) is finalized first, as QEMU walks its transaction list.
  Events tail(events.end() - 8, events.end());
  EXPECT_EQ(tail, (Events{"b:aborting", "b:CANCELLED", "b:concluded", "b:null", "a:aborting",
                          "a:CANCELLED", "a:concluded", "a:null"}));
}

TEST_F(JobTest, CancelPendingJob) {
  auto job = start("j", {}, false);
  job->finish();
  wait_status(*job, JobStatus::kPending);
  ASSERT_TRUE(run(job->co_user_cancel(true)).ok());
  EXPECT_EQ(job->status(), JobStatus::kNull);
  EXPECT_EQ(log_.take(), (Events{"j:created", "j:running", "j:waiting", "j:pending", "j:PENDING",
                                 "j:aborting", "j:CANCELLED", "j:concluded", "j:null"}));
  EXPECT_EQ(hooks_, (Events{"j:abort", "j:clean"}));
}

TEST_F(JobTest, JobIds) {
  auto& reg = engine_.jobs();
  auto mk = [&](std::optional<std::string> id, bool internal = false) {
    JobOptions o{.id = id, .internal = internal};
    return reg.add(std::make_shared<TestJob>(engine_, o, TestScript{}, nullptr));
  };
  EXPECT_EQ(mk("1x").error().message, "Invalid job ID '1x'");
  EXPECT_EQ(mk("a b").error().message, "Invalid job ID 'a b'");
  EXPECT_EQ(mk("").error().message, "Invalid job ID ''");
  EXPECT_EQ(mk(std::nullopt).error().message, "An explicit job ID is required");
  EXPECT_EQ(mk("x", true).error().message, "Cannot specify job ID for internal job");
  EXPECT_TRUE(log_.events().empty());  // refused jobs leave nothing behind
  auto job = make("a-1.b_2");
  EXPECT_EQ(mk("a-1.b_2").error().message, "Job ID 'a-1.b_2' already in use");
  ASSERT_TRUE(mk(std::nullopt, true).ok());
  EXPECT_EQ(reg.list().size(), 2u);
  run(reg.co_cancel_all());
  EXPECT_TRUE(reg.list().empty());
}

TEST_F(JobTest, EarlyFailLeavesNothing) {
  auto job = make("j");
  run(job->co_early_fail());
  EXPECT_EQ(log_.take(), (Events{"j:created", "j:null"}));
  EXPECT_EQ(engine_.jobs().find("j"), nullptr);
  EXPECT_TRUE(hooks_.empty());
}

TEST_F(JobTest, InternalJobsEmitNothing) {
  JobOptions o{.internal = true};
  auto job = std::make_shared<TestJob>(engine_, o, TestScript{}, nullptr);
  ASSERT_TRUE(engine_.jobs().add(job).ok());
  job->start();
  job->finish();
  wait_status(*job, JobStatus::kNull);
  EXPECT_TRUE(log_.events().empty());
}

TEST_F(JobTest, CancelAllAtShutdown) {
  auto running = start("r");
  auto concluded = start("e", {}, true, false);
  concluded->finish();
  wait_status(*concluded, JobStatus::kConcluded);
  auto pending = start("p", {}, false);
  pending->finish();
  wait_status(*pending, JobStatus::kPending);
  log_.take();
  run(engine_.jobs().co_cancel_all());
  EXPECT_TRUE(engine_.jobs().list().empty());
  EXPECT_EQ(log_.take(), (Events{"p:aborting", "p:CANCELLED", "p:concluded", "p:null", "e:null",
                                 "r:aborting", "r:CANCELLED", "r:concluded", "r:null"}));
}

}  // namespace
}  // namespace strata::testing
