#include "block/copy/copy_engine.h"

#include <algorithm>

namespace strata {

CopyEngine::CopyEngine(Loop& loop, ChunkCopier& copier, CopyListener& listener, CopyConfig config)
    : loop_(loop),
      copier_(copier),
      listener_(listener),
      config_(config),
      inflight_(loop),
      done_(loop) {}

std::optional<CopyEngine::Chunk> CopyEngine::take() {
  HBitmap& work = bits();
  if (work.empty()) return std::nullopt;
  auto extent = work.next_dirty_extent(cursor_);
  if (!extent && cursor_ != 0) {
    sweeps_++;
    cursor_ = 0;
    extent = work.next_dirty_extent(0);
  }
  if (!extent) return std::nullopt;
  uint64_t gran = work.granularity();
  uint64_t max = std::max(config_.max_chunk / gran * gran, gran);
  Chunk c{extent->offset, std::min(extent->length, max)};
  work.reset(c.offset, c.bytes);
  cursor_ = c.offset + c.bytes;
  if (cursor_ >= work.size()) {
    sweeps_++;
    cursor_ = 0;
  }
  return c;
}

Task<void> CopyEngine::co_worker(Chunk chunk) {
  {
    RangeLock::Entry held(inflight_, chunk.offset, chunk.bytes, true);
    if (held.must_wait()) co_await held.co_wait();
    ChunkOutcome out = co_await copier_.co_copy(chunk.offset, chunk.bytes);
    bytes_in_flight_ -= chunk.bytes;
    if (out.result) {
      listener_.on_progress(chunk.bytes);
    } else {
      ChunkErrorStep step = co_await listener_.co_on_error(out.result.error(), out.read_failed);
      if (step == ChunkErrorStep::kSkip) {
        listener_.on_progress(chunk.bytes);
      } else {
        HBitmap& work = bits();
        work.set(chunk.offset, std::min(chunk.bytes, work.size() - chunk.offset));
      }
      if (step == ChunkErrorStep::kStop && !failed_) failed_ = out.result.error();
    }
  }
  running_--;
  done_.wake_all();
}

Task<Result<void>> CopyEngine::co_run(HBitmap& work) {
  plain_ = &work;
  dirty_ = nullptr;
  co_return co_await co_loop();
}

Task<Result<void>> CopyEngine::co_run(DirtyBitmap& work) {
  plain_ = nullptr;
  dirty_ = &work;
  co_return co_await co_loop();
}

Task<Result<void>> CopyEngine::co_loop() {
  failed_.reset();
  bool cancelled = false;
  for (;;) {
    while (running_ >= config_.max_workers) co_await done_.wait();
    // A pause waits for the chunks in flight (QEMU's mirror_pause).
    while (running_ > 0 && listener_.wants_pause()) co_await done_.wait();
    if (failed_) break;
    bool go_on = co_await listener_.co_before_chunk();
    if (!go_on) {
      cancelled = true;
      break;
    }
    if (failed_) break;
    // One chunk per loop iteration: requests of other users (a guest
    // writing while a mirror copies) get their turn between chunks.
    co_await loop_.co_yield_now();
    if (failed_) break;
    std::optional<Chunk> chunk = take();
    if (!chunk) {
      if (running_ == 0) break;
      co_await done_.wait();  // a chunk that fails marks its range again
      continue;
    }
    running_++;
    bytes_in_flight_ += chunk->bytes;
    loop_.spawn(co_worker(*chunk));
  }
  while (running_ > 0) co_await done_.wait();
  if (failed_) co_return *failed_;
  if (cancelled) co_return Error{ECANCELED, "Operation canceled"};
  co_return Result<void>{};
}

}  // namespace strata
