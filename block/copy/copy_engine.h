// CopyEngine: copies the ranges a work bitmap marks, many chunks at once; the
// loop under every block job (stream, commit, mirror, backup).
//
// Contract: co_run() takes chunks from `work` (contiguous set ranges, at
// most `max_chunk` bytes, aligned to the bitmap's granularity), resets
// their bits, holds each chunk's range exclusively in inflight() while it
// is copied (a chunk overlapping an older entry there, a range marked again
// while it was copied or one a filter holds, waits for it), and hands it to
// the ChunkCopier, with up to `max_workers` chunks in flight. For a chunk that fails the listener
// decides (ChunkErrorStep): retry it on a later pass, drop it, or stop. co_run()
// returns once `work` is empty and nothing is in flight, or when the listener stops it (its error,
// or cancelled) after the chunks in flight finished. `work` may be a live bitmap that guest writes
// keep setting (mirror): it is scanned from where the last chunk ended and wraps around. Before
// each chunk the listener's pause point runs (rate limit, pause, cancel); a chunk's progress is
// reported once it is done. Filters that must not write under a copy (write-blocking mirror) wait
// on inflight() for the chunks overlapping their range. Thread rules: loop-thread only; one
// co_run() at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "base/sync.h"
#include "block/bitmap/dirty_bitmap.h"
#include "block/bitmap/hbitmap.h"
#include "block/core/range_lock.h"
#include "strata/result.h"
#include "strata/task.h"

namespace strata {

// The result of copying one chunk.
struct ChunkOutcome {
  Result<void> result;
  bool read_failed = false;  // the error came from the source (else the target)
  uint64_t done_bytes = 0;   // on failure: bytes from the start copied before it
};

// Copies one chunk; see BlockCopier for the usual source-to-target copy.
class ChunkCopier {
 public:
  virtual ~ChunkCopier() = default;
  virtual Task<ChunkOutcome> co_copy(uint64_t offset, uint64_t bytes) = 0;
};

// What becomes of a chunk that failed: its range is marked again and the
// copy goes on (retried on a later pass), or it is dropped and counted as
// done (the job remembers the error), or it is marked again and the copy
// stops with the error.
enum class ChunkErrorStep { kRetry, kSkip, kStop };

// What the engine needs from the job that runs it.
class CopyListener {
 public:
  virtual ~CopyListener() = default;
  // True when the job wants to pause: no new chunk starts until the chunks
  // in flight are done, then co_before_chunk() parks it.
  virtual bool wants_pause() const { return false; }
  // Before a chunk is taken: a pause point. False stops the copy
  // (cancelled).
  virtual Task<bool> co_before_chunk() = 0;
  // A chunk failed: what to do with it (by value: see BlockJob).
  virtual Task<ChunkErrorStep> co_on_error(Error error, bool read_failed) = 0;
  // A chunk of `bytes` is done.
  virtual void on_progress(uint64_t bytes) = 0;
};

struct CopyConfig {
  uint64_t max_chunk = 1 << 20;
  unsigned max_workers = 8;
};

class CopyEngine {
 public:
  CopyEngine(Loop& loop, ChunkCopier& copier, CopyListener& listener, CopyConfig config);
  CopyEngine(const CopyEngine&) = delete;
  CopyEngine& operator=(const CopyEngine&) = delete;

  // Copies what `work` marks (see the contract). The error is the one the
  // listener stopped on; cancellation returns ECANCELED.
  Task<Result<void>> co_run(HBitmap& work);
  // The same on a node's dirty bitmap, which guest writes keep marking
  // (every change goes through DirtyBitmap::bits(), see BitmapSet::mark).
  Task<Result<void>> co_run(DirtyBitmap& work);

  RangeLock& inflight() { return inflight_; }
  size_t chunks_in_flight() const { return running_; }
  // Bytes of the chunks being copied (taken from the bitmap, not done).
  uint64_t bytes_in_flight() const { return bytes_in_flight_; }
  // How many times the scan went past the end of `work` and wrapped
  // around (a first sweep over a live bitmap is done once this is 1).
  uint64_t sweeps() const { return sweeps_; }
  const CopyConfig& config() const { return config_; }
  void set_config(CopyConfig config) { config_ = config; }

 private:
  struct Chunk {
    uint64_t offset;
    uint64_t bytes;
  };
  HBitmap& bits() { return dirty_ ? dirty_->bits() : *plain_; }
  Task<Result<void>> co_loop();
  // The next chunk to copy, resetting its bits, or none.
  std::optional<Chunk> take();
  Task<void> co_worker(Chunk chunk);

  Loop& loop_;
  ChunkCopier& copier_;
  CopyListener& listener_;
  CopyConfig config_;
  RangeLock inflight_;
  CoQueue done_;
  size_t running_ = 0;
  uint64_t bytes_in_flight_ = 0;
  uint64_t cursor_ = 0;
  uint64_t sweeps_ = 0;
  HBitmap* plain_ = nullptr;
  DirtyBitmap* dirty_ = nullptr;
  std::optional<Error> failed_;
};

}  // namespace strata
