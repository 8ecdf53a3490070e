// Gate: counts work in flight on an object and lets its owner stop new work
// and wait for the old to finish (close), or just wait for a quiet moment
// (drain), as seastar's gate does.
//
// Contract: enter() fails once the gate is closed; every successful enter()
// is matched by one leave() (use Gate::Hold). co_close() returns when the
// count reaches zero; reopen() admits work again.
// Thread rules: loop-thread only.
#pragma once

#include <cstddef>

#include "base/sync.h"

namespace strata {

class Gate {
 public:
  explicit Gate(Loop& loop) : idle_(loop) {}
  Gate(const Gate&) = delete;
  Gate& operator=(const Gate&) = delete;

  bool enter() {
    if (closed_) return false;
    count_++;
    return true;
  }
  void leave() {
    if (--count_ == 0) idle_.wake_all();
  }
  bool closed() const { return closed_; }
  size_t in_flight() const { return count_; }

  // Stops new work and waits for the work in flight.
  Task<void> co_close() {
    closed_ = true;
    co_await co_drain();
  }
  // Waits until nothing is in flight, without refusing new work.
  Task<void> co_drain() {
    while (count_ != 0) co_await idle_.wait();
  }
  void reopen() { closed_ = false; }

  // RAII membership: check ok() before doing the work.
  class Hold {
   public:
    explicit Hold(Gate& g) : gate_(g.enter() ? &g : nullptr) {}
    Hold(Hold&& o) noexcept : gate_(o.gate_) { o.gate_ = nullptr; }
    Hold(const Hold&) = delete;
    ~Hold() {
      if (gate_) gate_->leave();
    }
    bool ok() const { return gate_ != nullptr; }

   private:
    Gate* gate_;
  };

 private:
  CoQueue idle_;
  size_t count_ = 0;
  bool closed_ = false;
};

}  // namespace strata
