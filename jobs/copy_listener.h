// JobCopyListener: what the copy engine (block/copy/copy_engine.h) asks of
// the block job that runs it: pause points and cancellation, the job's
// error policy, and progress.
//
// Contract: a chunk's error goes to BlockJob::note_error(); report
// stops the copy (the engine returns the error), ignore carries on (the
// range is retried on a later pass, as QEMU's copy jobs do), stop pauses the
// job until it is resumed (then retried) or cancelled. The engine pauses
// only once its chunks in flight are done.
// Thread rules: loop-thread only.
#pragma once

#include "block/copy/copy_engine.h"
#include "jobs/block_job.h"

namespace strata {

class JobCopyListener : public CopyListener {
 public:
  explicit JobCopyListener(BlockJob& job) : job_(job) {}

  bool wants_pause() const override { return job_.pause_count() > 0 || job_.is_cancelled(); }
  Task<bool> co_before_chunk() override {
    co_await job_.co_pause_point();
    co_return !job_.is_cancelled();
  }
  // Runs in the engine's workers, several at once: `stop` only marks the
  // job paused (the engine parks at its next chunk once the chunks in
  // flight are done, and retries the range after job-resume); only the
  // run coroutine may park at a pause point.
  Task<ChunkErrorStep> co_on_error(Error error, bool read_failed) override {
    ErrorAction action = job_.note_error(error, read_failed);
    co_return action == ErrorAction::kReport ? ChunkErrorStep::kStop : ChunkErrorStep::kRetry;
  }
  void on_progress(uint64_t bytes) override { job_.progress_update(bytes); }

 private:
  BlockJob& job_;
};

}  // namespace strata
