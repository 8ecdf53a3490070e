#include "nbd/pipe_pool.h"

namespace strata::nbd {

Task<PipePool::Lease> PipePool::co_take() {
  for (;;) {
    if (failed_) co_return Lease();
    if (!idle_.empty()) {
      std::unique_ptr<Pipe> pipe = std::move(idle_.back());
      idle_.pop_back();
      co_return Lease(this, std::move(pipe));
    }
    if (made_ < max_pipes_) {
      auto pipe = Pipe::create(pipe_bytes_);
      // A pipe the kernel kept small (per-user pipe allowance) would only
      // be taken and given back: stop making pipes.
      if (!pipe || (*pipe)->capacity() < pipe_bytes_) {
        failed_ = true;
        returned_.wake_all();
        co_return Lease();
      }
      made_++;
      co_return Lease(this, std::move(*pipe));
    }
    co_await returned_.wait();
  }
}

void PipePool::give(std::unique_ptr<Pipe> pipe) {
  pipe->clear();
  idle_.push_back(std::move(pipe));
  returned_.wake_one();
}

}  // namespace strata::nbd
