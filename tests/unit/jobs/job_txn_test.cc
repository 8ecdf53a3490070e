// Job transactions (QEMU's tests/unit/test-blockjob-txn.c): jobs that
// finish together, one failure aborting the others, finalize of the whole
// transaction.
#include "jobs/job_txn.h"

#include <gtest/gtest.h>

#include "tests/unit/jobs/test_jobs.h"

namespace strata::testing {
namespace {

class JobTxnTest : public JobTest {
 protected:
  std::vector<std::shared_ptr<TestJob>> group(std::vector<TestScript> scripts,
                                              bool auto_finalize = true) {
    auto txn = engine_.jobs().new_txn();
    std::vector<std::shared_ptr<TestJob>> jobs;
    for (size_t i = 0; i < scripts.size(); i++) {
      jobs.push_back(make("t" + std::to_string(i), scripts[i], auto_finalize, true, txn));
    }
    for (auto& j : jobs) j->start();
    return jobs;
  }
};

TEST_F(JobTxnTest, JobsWaitForEachOtherAndFinishTogether) {
  auto jobs = group({{}, {}, {}});
  jobs[0]->finish();
  wait_status(*jobs[0], JobStatus::kWaiting);
  jobs[2]->finish();
  wait_status(*jobs[2], JobStatus::kWaiting);
  settle();
  EXPECT_EQ(jobs[0]->status(), JobStatus::kWaiting);
  EXPECT_TRUE(hooks_.empty());
  jobs[1]->finish();
  for (auto& j : jobs) wait_status(*j, JobStatus::kNull);
  // Every prepare before any commit, newest job first.
  EXPECT_EQ(hooks_, (Events{"t2:prepare", "t1:prepare", "t0:prepare", "t2:commit", "t2:clean",
                            "t1:commit", "t1:clean", "t0:commit", "t0:clean"}));
  auto events = log_.take();
  Events tail(events.end() - 13, events.end());
  EXPECT_EQ(tail, (Events{"t1:waiting", "t2:pending", "t1:pending", "t0:pending", "t2:COMPLETED",
                          "t2:concluded", "t2:null", "t1:COMPLETED", "t1:concluded", "t1:null",
                          "t0:COMPLETED", "t0:concluded", "t0:null"}));
}

TEST_F(JobTxnTest, OneFailureCancelsTheOthers) {
  auto jobs = group({{}, {.run_error = Error{EIO, "boom"}}, {}});
  jobs[0]->finish();
  wait_status(*jobs[0], JobStatus::kWaiting);
  jobs[1]->finish();
  for (auto& j : jobs) wait_status(*j, JobStatus::kNull);
  auto events = log_.take();
  Events tail(events.begin() + 7, events.end());  // after created/running x3, t0:waiting
  EXPECT_EQ(tail, (Events{"t1:aborting", "t2:aborting", "t2:CANCELLED", "t2:concluded", "t2:null",
                          "t1:COMPLETED:Input/output error", "t1:concluded", "t1:null", "t0:aborting",
                          "t0:CANCELLED", "t0:concluded", "t0:null"}));
  EXPECT_EQ(hooks_,
            (Events{"t2:abort", "t2:clean", "t1:abort", "t1:clean", "t0:abort", "t0:clean"}));
  EXPECT_EQ(jobs[0]->error()->message, "Operation canceled");
}

TEST_F(JobTxnTest, FailedPrepareAbortsTheTransaction) {
  auto jobs = group({{}, {.prepare_error = Error{EIO, "no prepare"}}});
  for (auto& j : jobs) j->finish();
  for (auto& j : jobs) wait_status(*j, JobStatus::kNull);
  EXPECT_EQ(hooks_, (Events{"t1:prepare", "t1:abort", "t1:clean", "t0:abort", "t0:clean"}));
  EXPECT_EQ(jobs[1]->error()->message, "no prepare");
  EXPECT_EQ(jobs[0]->error()->message, "Operation canceled");
}

TEST_F(JobTxnTest, FinalizeOfOneJobFinalizesTheTransaction) {
  auto jobs = group({{}, {}}, /*auto_finalize=*/false);
  for (auto& j : jobs) j->finish();
  for (auto& j : jobs) wait_status(*j, JobStatus::kPending);
  settle();
  auto events = log_.take();
  EXPECT_EQ(std::count(events.begin(), events.end(), "t0:PENDING"), 1);
  EXPECT_EQ(std::count(events.begin(), events.end(), "t1:PENDING"), 1);
  ASSERT_TRUE(run(jobs[0]->co_finalize()).ok());
  for (auto& j : jobs) EXPECT_EQ(j->status(), JobStatus::kNull);
  EXPECT_EQ(log_.take(), (Events{"t1:COMPLETED", "t1:concluded", "t1:null", "t0:COMPLETED",
                                 "t0:concluded", "t0:null"}));
}

TEST_F(JobTxnTest, CancelOfARunningJobCancelsTheOthers) {
  auto jobs = group({{}, {}});
  ASSERT_TRUE(run(jobs[0]->co_user_cancel(true)).ok());
  for (auto& j : jobs) wait_status(*j, JobStatus::kNull);
  auto events = log_.take();
  EXPECT_EQ(std::count(events.begin(), events.end(), "t0:CANCELLED"), 1);
  EXPECT_EQ(std::count(events.begin(), events.end(), "t1:CANCELLED"), 1);
}

}  // namespace
}  // namespace strata::testing
