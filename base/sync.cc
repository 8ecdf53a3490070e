#include "base/sync.h"

#include <cstdio>
#include <cstdlib>

namespace strata {

void CoQueue::push(Waiter* w) {
  w->next = nullptr;
  if (tail_) {
    tail_->next = w;
  } else {
    head_ = w;
  }
  tail_ = w;
  size_++;
}

bool CoQueue::wake_one() {
  Waiter* w = head_;
  if (!w) return false;
  head_ = w->next;
  if (!head_) tail_ = nullptr;
  size_--;
  // The node lives in the waiter's frame, valid until that frame resumes.
  auto h = w->handle;
  loop_.post([h] { h.resume(); });
  return true;
}

void CoQueue::wake_all() {
  while (wake_one()) {
  }
}

Task<void> CoMutex::co_lock() {
  while (locked_) co_await queue_.wait();
  locked_ = true;
}

bool CoMutex::try_lock() {
  if (locked_) return false;
  locked_ = true;
  return true;
}

void CoMutex::unlock() {
  locked_ = false;
  queue_.wake_one();
}

Task<CoMutex::Guard> CoMutex::co_scoped_lock() {
  co_await co_lock();
  co_return Guard(this);
}

Task<void> CoEvent::co_wait() {
  while (!set_) co_await queue_.wait();
}

TaskGroup::~TaskGroup() {
  if (running_ != 0) {
    std::fprintf(stderr, "strata: TaskGroup destroyed with %zu tasks running\n", running_);
    std::abort();
  }
}

void TaskGroup::spawn(Task<void> task) {
  running_++;
  loop_.spawn(run_child(std::move(task)));
}

Task<void> TaskGroup::run_child(Task<void> task) {
  co_await std::move(task);
  if (--running_ == 0) idle_.wake_all();
}

Task<void> TaskGroup::co_join() {
  while (running_ != 0) co_await idle_.wait();
}

}  // namespace strata
