// Task<T>: a lazily started coroutine that produces a T.
//
// Contract: a Task starts running when it is co_awaited and resumes its
// awaiter when it finishes. A Task that is never awaited is destroyed without
// running. Tasks do not use exceptions: an exception escaping a coroutine
// terminates the process. Use spawn() (base/loop.h) to run a Task<void>
// detached.
//
// Stack depth: the awaiter starts the child with resume() from its own
// await_suspend. A child that completes before its first real suspension
// returns there, and the awaiter continues without suspending at all, so a
// loop awaiting many synchronously-completing children runs in constant
// stack. A child that did suspend resumes its awaiter by symmetric transfer
// when it finishes. None of this depends on the compiler turning symmetric
// transfer into tail calls (it does not under -O0 or the sanitizers).
// Thread rules: a Task is created, awaited and destroyed on one thread (the
// loop thread that owns the state it touches).
#pragma once

#include <coroutine>
#include <exception>
#include <optional>
#include <utility>

namespace strata {

template <typename T>
class Task;

namespace detail {

struct TaskFinalAwaiter {
  bool await_ready() const noexcept { return false; }
  template <typename Promise>
  std::coroutine_handle<> await_suspend(std::coroutine_handle<Promise> self) noexcept {
    auto& promise = self.promise();
    if (promise.starting) {
      // Still inside the awaiter's resume(): return there.
      promise.finished_while_starting = true;
      return std::noop_coroutine();
    }
    auto next = promise.continuation;
    return next ? next : std::noop_coroutine();
  }
  void await_resume() const noexcept {}
};

struct TaskPromiseBase {
  std::coroutine_handle<> continuation;
  bool starting = false;                 // the awaiter's resume() is on the stack
  bool finished_while_starting = false;  // ... and the task completed inside it
  std::suspend_always initial_suspend() const noexcept { return {}; }
  TaskFinalAwaiter final_suspend() const noexcept { return {}; }
  void unhandled_exception() const noexcept { std::terminate(); }
};

template <typename T>
struct TaskPromise : TaskPromiseBase {
  std::optional<T> value;
  Task<T> get_return_object() noexcept;
  template <typename U>
  void return_value(U&& v) {
    value.emplace(std::forward<U>(v));
  }
  T take() { return std::move(*value); }
};

template <>
struct TaskPromise<void> : TaskPromiseBase {
  Task<void> get_return_object() noexcept;
  void return_void() const noexcept {}
  void take() const noexcept {}
};

}  // namespace detail

template <typename T = void>
class [[nodiscard]] Task {
 public:
  using promise_type = detail::TaskPromise<T>;
  using Handle = std::coroutine_handle<promise_type>;

  Task() = default;
  explicit Task(Handle h) : handle_(h) {}
  Task(Task&& other) noexcept : handle_(std::exchange(other.handle_, {})) {}
  Task& operator=(Task&& other) noexcept {
    if (this != &other) {
      reset();
      handle_ = std::exchange(other.handle_, {});
    }
    return *this;
  }
  Task(const Task&) = delete;
  Task& operator=(const Task&) = delete;
  ~Task() { reset(); }

  bool valid() const { return static_cast<bool>(handle_); }

  auto operator co_await() && noexcept {
    struct Awaiter {
      Handle handle;
      bool await_ready() const noexcept { return !handle || handle.done(); }
      // Returns false (continue the awaiter now) when the task completed
      // without suspending, true when it suspended and will resume us.
      bool await_suspend(std::coroutine_handle<> awaiting) noexcept {
        auto& promise = handle.promise();
        promise.continuation = awaiting;
        promise.starting = true;
        handle.resume();
        // The frame is alive: this Task (held by the awaiting coroutine) owns it.
        promise.starting = false;
        return !promise.finished_while_starting;
      }
      T await_resume() { return handle.promise().take(); }
    };
    return Awaiter{handle_};
  }

 private:
  void reset() {
    if (handle_) handle_.destroy();
    handle_ = {};
  }
  Handle handle_;
};

namespace detail {
template <typename T>
Task<T> TaskPromise<T>::get_return_object() noexcept {
  return Task<T>(std::coroutine_handle<TaskPromise<T>>::from_promise(*this));
}
inline Task<void> TaskPromise<void>::get_return_object() noexcept {
  return Task<void>(std::coroutine_handle<TaskPromise<void>>::from_promise(*this));
}
}  // namespace detail

}  // namespace strata
