// Coroutine synchronization for the loop thread: CoQueue (a list of parked
// coroutines), CoMutex, CoEvent and TaskGroup (spawn children, join them).
//
// Contract: waking never resumes a waiter inside the caller's stack; woken
// coroutines are resumed from the loop's post queue, in FIFO order.
// Thread rules: loop-thread only; none of these is thread safe.
#pragma once

#include <coroutine>
#include <cstddef>

#include "base/loop.h"

namespace strata {

// Parks coroutines until woken. The queue is intrusive: each waiter's link
// lives in its own suspended frame, so neither constructing a queue nor
// waiting allocates (a queue sits in every in-flight request).
class CoQueue {
 public:
  explicit CoQueue(Loop& loop) : loop_(loop) {}
  CoQueue(const CoQueue&) = delete;
  CoQueue& operator=(const CoQueue&) = delete;

  // One parked coroutine; owned by the awaiter in the waiting frame.
  struct Waiter {
    std::coroutine_handle<> handle;
    Waiter* next = nullptr;
  };

  auto wait() {
    struct Awaiter {
      CoQueue& q;
      Waiter node;
      bool await_ready() const noexcept { return false; }
      void await_suspend(std::coroutine_handle<> h) {
        node.handle = h;
        q.push(&node);
      }
      void await_resume() const noexcept {}
    };
    return Awaiter{*this, {}};
  }
  bool wake_one();
  void wake_all();
  bool empty() const { return head_ == nullptr; }
  size_t size() const { return size_; }

 private:
  void push(Waiter* w);
  Loop& loop_;
  Waiter* head_ = nullptr;
  Waiter* tail_ = nullptr;
  size_t size_ = 0;
};

// A mutex for coroutines: lock() suspends until the lock is free.
class CoMutex {
 public:
  explicit CoMutex(Loop& loop) : queue_(loop) {}
  Task<void> co_lock();
  bool try_lock();
  void unlock();
  bool locked() const { return locked_; }

  // RAII release for a held lock.
  class Guard {
   public:
    explicit Guard(CoMutex* m) : m_(m) {}
    Guard(Guard&& o) noexcept : m_(o.m_) { o.m_ = nullptr; }
    Guard(const Guard&) = delete;
    ~Guard() {
      if (m_) m_->unlock();
    }

   private:
    CoMutex* m_;
  };
  Task<Guard> co_scoped_lock();

 private:
  CoQueue queue_;
  bool locked_ = false;
};

// A level-triggered event: wait() returns at once when set.
class CoEvent {
 public:
  explicit CoEvent(Loop& loop) : queue_(loop) {}
  void set() {
    set_ = true;
    queue_.wake_all();
  }
  void reset() { set_ = false; }
  bool is_set() const { return set_; }
  Task<void> co_wait();

 private:
  CoQueue queue_;
  bool set_ = false;
};

// Runs child tasks concurrently; join() waits until all have finished.
class TaskGroup {
 public:
  explicit TaskGroup(Loop& loop) : loop_(loop), idle_(loop) {}
  TaskGroup(const TaskGroup&) = delete;
  TaskGroup& operator=(const TaskGroup&) = delete;
  ~TaskGroup();

  void spawn(Task<void> task);
  Task<void> co_join();
  size_t running() const { return running_; }

 private:
  Task<void> run_child(Task<void> task);
  Loop& loop_;
  CoQueue idle_;
  size_t running_ = 0;
};

}  // namespace strata
