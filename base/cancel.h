// CancelToken: a one-way flag a job or request polls, with callbacks run once
// when it is cancelled (for example to wake a sleeping copy loop).
//
// Contract: cancel() is idempotent; callbacks registered after cancellation
// run at once. Unregister with the id returned by on_cancel() before the
// callback's captures die.
// Thread rules: loop-thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <map>

namespace strata {

class CancelToken {
 public:
  bool cancelled() const { return cancelled_; }
  void cancel() {
    if (cancelled_) return;
    cancelled_ = true;
    auto callbacks = std::move(callbacks_);
    callbacks_.clear();
    for (auto& [id, fn] : callbacks) fn();
  }
  uint64_t on_cancel(std::function<void()> fn) {
    if (cancelled_) {
      fn();
      return 0;
    }
    uint64_t id = ++next_id_;
    callbacks_.emplace(id, std::move(fn));
    return id;
  }
  void remove(uint64_t id) { callbacks_.erase(id); }

 private:
  bool cancelled_ = false;
  uint64_t next_id_ = 0;
  std::map<uint64_t, std::function<void()>> callbacks_;
};

}  // namespace strata
