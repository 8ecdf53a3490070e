// PipePool: the pipes one connection builds zero-copy READ replies in
// (reply headers written into the pipe, the data spliced from the image;
// base/pipe.h).
//
// Contract: co_take() lends an empty pipe, waiting while `max_pipes` are
// lent out. It lends nothing (an empty Lease) once a pipe could not be made
// at `pipe_bytes` (descriptor or pipe limits); callers then build replies in
// memory. Pipes
// are made on first use and kept until the pool is destroyed. A Lease gives
// its pipe back, emptied, when it is destroyed or reset. The pool must
// outlive its leases.
// Thread rules: loop-thread only.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

#include "base/pipe.h"
#include "base/sync.h"

namespace strata::nbd {

class PipePool {
 public:
  PipePool(Loop& loop, size_t max_pipes, size_t pipe_bytes)
      : max_pipes_(max_pipes), pipe_bytes_(pipe_bytes), returned_(loop) {}
  PipePool(const PipePool&) = delete;
  PipePool& operator=(const PipePool&) = delete;

  class Lease {
   public:
    Lease() = default;
    Lease(PipePool* pool, std::unique_ptr<Pipe> pipe) : pool_(pool), pipe_(std::move(pipe)) {}
    Lease(Lease&& o) noexcept = default;
    Lease& operator=(Lease&& o) noexcept {
      reset();
      pool_ = o.pool_;
      pipe_ = std::move(o.pipe_);
      return *this;
    }
    ~Lease() { reset(); }
    explicit operator bool() const { return pipe_ != nullptr; }
    Pipe& operator*() const { return *pipe_; }
    Pipe* operator->() const { return pipe_.get(); }
    void reset() {
      if (pipe_) pool_->give(std::move(pipe_));
    }

   private:
    PipePool* pool_ = nullptr;
    std::unique_ptr<Pipe> pipe_;
  };

  Task<Lease> co_take();
  // The capacity of every pipe lent (pipes the kernel keeps smaller are
  // not lent).
  size_t pipe_bytes() const { return pipe_bytes_; }
  // Pipes lent out or idle.
  size_t pipes() const { return made_; }

 private:
  void give(std::unique_ptr<Pipe> pipe);

  size_t max_pipes_;
  size_t pipe_bytes_;
  size_t made_ = 0;
  bool failed_ = false;
  std::vector<std::unique_ptr<Pipe>> idle_;
  CoQueue returned_;
};

}  // namespace strata::nbd
