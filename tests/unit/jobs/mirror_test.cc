// The mirror job's write-blocking path through the engine API, on in-memory
// nodes whose requests take time: guest writes that overlap in time inside
// one large granule leave nothing for the background copy, and the target
// reads as the source; a write beside the filter is copied all the same.
#include <gtest/gtest.h>

#include "base/sync.h"
#include "block/core/graph.h"
#include "jobs/mirror.h"
#include "strata/drive.h"
#include "unit/block/core/mem_driver.h"
#include "unit/jobs/test_jobs.h"

namespace strata::testing {
namespace {

constexpr uint64_t kSize = 16 << 20;
constexpr uint64_t kGranule = 8 << 20;

class MirrorJobTest : public JobTest {
 protected:
  void SetUp() override {
    for (MemState* s : {&src_, &tgt_}) {
      s->data.assign(kSize, 0);
      s->delay_ms = 2;
    }
    register_mem_driver(engine_, &src_, "mem");
    register_mem_driver(engine_, &tgt_, "memt");
    ASSERT_TRUE(run(engine_.graph().co_add({{"driver", "mem"}, {"node-name", "src"}})));
    ASSERT_TRUE(run(engine_.graph().co_add({{"driver", "memt"}, {"node-name", "tgt"}})));
    auto d = Drive::attach(engine_, "src", {.writable = true, .share_rw = true});
    ASSERT_TRUE(d) << d.error().message;
    guest_ = std::move(*d);
  }
  void TearDown() override {
    guest_->close();
    engine_.run(engine_.co_close_all());
  }
  std::shared_ptr<MirrorJob> start_mirror(MirrorSync sync, bool write_blocking) {
    MirrorParams p;
    p.job = {.id = "m"};
    p.source = engine_.graph().find("src");
    p.target = engine_.graph().find("tgt");
    p.sync = sync;
    p.granularity = kGranule;
    p.write_blocking = write_blocking;
    auto job = run(MirrorJob::co_start(engine_, std::move(p)));
    EXPECT_TRUE(job) << job.error().message;
    return job ? *job : nullptr;
  }
  // Small writes into the first granule, each starting while the one before
  // is between the source and the target.
  Task<void> co_staggered_writes(int n) {
    TaskGroup group(engine_.loop());
    for (int i = 0; i < n; i++) {
      group.spawn(co_write_after(i * 3, i * 65536, static_cast<uint8_t>(0x40 + i)));
    }
    co_await group.co_join();
  }
  Task<void> co_write_after(uint64_t ms, uint64_t offset, uint8_t byte) {
    co_await engine_.loop().co_sleep(ms);
    std::vector<uint8_t> buf(4096, byte);
    auto r = co_await guest_->co_write(offset, buf);
    EXPECT_TRUE(r) << r.error().message;
  }
  Task<void> co_sleep(uint64_t ms) { co_await engine_.loop().co_sleep(ms); }
  static bool reads(const MemState& s) {
    for (const MemRequest& r : s.log) {
      if (r.op == 'r') return true;
    }
    return false;
  }

  MemState src_;
  MemState tgt_;
  std::unique_ptr<Drive> guest_;
};

// In write-blocking mode the job's bitmap does not record the source: a
// write cannot mistake another write's mark for a granule still owed, and
// leave the granule dirty after both brought it in sync.
TEST_F(MirrorJobTest, OverlappingWritesInOneGranuleLeaveNothingToCopy) {
  auto job = start_mirror(MirrorSync::kNone, true);
  ASSERT_TRUE(job);
  wait_status(*job, JobStatus::kReady);
  run(co_staggered_writes(8));
  src_.log.clear();
  run(co_sleep(300));  // three of the ready job's looks for work
  EXPECT_FALSE(reads(src_)) << "the background copy re-read a granule in sync";
  EXPECT_EQ(src_.data, tgt_.data);
  EXPECT_EQ(job->progress_current(), job->progress_total());
  EXPECT_TRUE(job->actively_synced());
  ASSERT_TRUE(job->complete());
  wait_status(*job, JobStatus::kNull);
  EXPECT_EQ(guest_->edge()->node()->name(), "tgt");
}

// After block-job-change's switch the same holds: what the background mode
// recorded is copied, and the guest's later writes are not recorded again.
TEST_F(MirrorJobTest, SwitchedToWriteBlockingTheBitmapStopsRecording) {
  auto job = start_mirror(MirrorSync::kFull, false);
  ASSERT_TRUE(job);
  wait_status(*job, JobStatus::kReady);
  EXPECT_FALSE(job->actively_synced());
  ASSERT_TRUE(job->change(BlockJobChange{.type = "mirror", .write_blocking = true}));
  run_until([&] { return job->actively_synced(); });
  run(co_staggered_writes(8));
  src_.log.clear();
  run(co_sleep(300));
  EXPECT_FALSE(reads(src_));
  EXPECT_EQ(src_.data, tgt_.data);
  ASSERT_TRUE(job->complete());
  wait_status(*job, JobStatus::kNull);
}

// A write that reaches the source beside the filter (a user attached to
// the source after the job started) is still recorded, and copied.
TEST_F(MirrorJobTest, AWriteBesideTheFilterIsStillCopied) {
  auto job = start_mirror(MirrorSync::kNone, true);
  ASSERT_TRUE(job);
  wait_status(*job, JobStatus::kReady);
  auto beside = Drive::attach(engine_, "src", {.writable = true, .share_rw = true});
  ASSERT_TRUE(beside) << beside.error().message;
  std::vector<uint8_t> buf(4096, 0x99);
  ASSERT_TRUE((*beside)->write(kGranule + 8192, buf));
  run_until([&] { return src_.data == tgt_.data; });
  (*beside)->close();
  ASSERT_TRUE(job->complete());
  wait_status(*job, JobStatus::kNull);
}

// In background mode the same writes are recorded and copied.
TEST_F(MirrorJobTest, BackgroundModeCopiesWhatTheGuestWrote) {
  auto job = start_mirror(MirrorSync::kNone, false);
  ASSERT_TRUE(job);
  wait_status(*job, JobStatus::kReady);
  run(co_staggered_writes(8));
  run_until([&] { return src_.data == tgt_.data; });
  EXPECT_TRUE(reads(src_));
  ASSERT_TRUE(job->complete());
  wait_status(*job, JobStatus::kNull);
}

}  // namespace
}  // namespace strata::testing
