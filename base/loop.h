// Loop: the event loop that owns every piece of Strata state.
//
// Contract: one Loop per Engine. It either owns a private libuv loop or wraps
// a host's loop (embedding). Work that must block (file syscalls) runs on
// libuv's thread pool through offload(); everything else runs on the loop
// thread. post() defers a callback to the loop thread and is the only member
// that may be called from another thread.
// Thread rules: all members except post() are loop-thread only.
#pragma once

#include <chrono>
#include <coroutine>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>

#include "strata/task.h"

struct uv_loop_s;

namespace strata {

class Loop;
class IoRing;  // base/io_ring.h

namespace detail {
// Runs a blocking callable on the thread pool and resumes the awaiting
// coroutine on the loop thread with its result.
class OffloadBase {
 public:
  explicit OffloadBase(Loop& loop) : loop_(loop) {}
  virtual ~OffloadBase() = default;
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h);

 protected:
  virtual void run_blocking() = 0;

 private:
  static void work_cb(void* self);
  static void after_cb(void* self);
  Loop& loop_;
  std::coroutine_handle<> waiter_;
  void* request_ = nullptr;
};
}  // namespace detail

class Loop {
 public:
  // A private loop. `threadpool_size` applies only if UV_THREADPOOL_SIZE is
  // not set yet; libuv reads it once per process.
  explicit Loop(unsigned threadpool_size = 16);
  // Wraps a host loop; the host keeps running it.
  explicit Loop(uv_loop_s* host_loop);
  ~Loop();
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  uv_loop_s* uv() const { return loop_; }

  // Defers `fn` to the loop thread. Safe from any thread.
  void post(std::function<void()> fn);

  // Starts `task` now and lets it run to completion on its own.
  void spawn(Task<void> task);

  // Runs the loop until `task` completes and returns its value. Aborts with a
  // message if the loop runs out of work first (a deadlock in the caller).
  template <typename T>
  T run(Task<T> task);

  // Runs until stop() is called or nothing is left to do.
  void run_forever();
  void stop();

  // Suspends the calling coroutine for at least `ms` milliseconds from now.
  Task<void> co_sleep(uint64_t ms);

  // Lets the loop run one iteration (timers, I/O callbacks, posted work)
  // before the calling coroutine carries on. A coroutine whose awaited work
  // keeps completing synchronously (cache hits, inline I/O) never returns to
  // the loop on its own; long-running work (jobs, copies) calls this so
  // that it never starves the other users of the loop (see jobs/job.h for
  // the rule jobs follow). Yielded coroutines resume in FIFO order, each
  // once per loop iteration, after the loop polled for I/O without waiting.
  auto co_yield_now() {
    struct Awaiter {
      Loop& loop;
      bool await_ready() const noexcept { return false; }
      void await_suspend(std::coroutine_handle<> h) { loop.add_yielded(h); }
      void await_resume() const noexcept {}
    };
    return Awaiter{*this};
  }

  // Runs `fn` on the thread pool; the awaiting coroutine gets its result.
  template <typename F>
  auto offload(F fn);

  // Monotonic clock in nanoseconds.
  static uint64_t now_ns();

  bool on_loop_thread() const { return std::this_thread::get_id() == thread_id_; }

  // The largest write to a memory-backed file that fs::co_pwritev runs on
  // this loop's thread instead of the pool (see fs::InlineIo). Raising it
  // lets the loop block for the copy (about 0.5 ms per MiB) in exchange for
  // two thread hand-offs per write; a process that runs one copy job, such
  // as strata-img, raises it.
  size_t max_inline_write() const { return max_inline_write_; }
  void set_max_inline_write(size_t bytes) { max_inline_write_ = bytes; }

  // The loop's io_uring engine (base/io_ring.h), set up on first use. Null
  // when the kernel refuses io_uring (too old, seccomp, the sysctl) or the
  // environment sets STRATA_IO_URING=0; io_ring_error() then says why, and
  // file I/O runs on the thread pool.
  IoRing* io_ring();
  const std::string& io_ring_error();

 private:
  void init_handles();
  void run_once_blocking();
  bool alive() const;
  void drain_posted();
  static void on_async(void* handle);
  static void on_idle(void* handle);
  void add_yielded(std::coroutine_handle<> h);
  void resume_yielded();
  void update_idle();

  uv_loop_s* loop_ = nullptr;
  bool owns_loop_ = false;
  void* async_ = nullptr;  // uv_async_t*
  void* idle_ = nullptr;   // uv_idle_t*
  std::mutex posted_mutex_;
  std::deque<std::function<void()>> posted_;
  std::deque<std::coroutine_handle<>> yielded_;  // loop thread only
  std::thread::id thread_id_;
  bool stop_requested_ = false;
  size_t max_inline_write_ = 128 * 1024;
  std::unique_ptr<IoRing> ring_;
  bool ring_probed_ = false;
  std::string ring_error_;
};

namespace detail {
template <typename R>
class Offload final : public OffloadBase {
 public:
  template <typename F>
  Offload(Loop& loop, F&& fn) : OffloadBase(loop), fn_(std::forward<F>(fn)) {}
  R await_resume() { return std::move(*result_); }

 private:
  void run_blocking() override { result_.emplace(fn_()); }
  std::function<R()> fn_;
  std::optional<R> result_;
};

}  // namespace detail

template <typename F>
auto Loop::offload(F fn) {
  using R = std::invoke_result_t<F>;
  static_assert(!std::is_void_v<R>, "offloaded callables return a value");
  return detail::Offload<R>(*this, std::move(fn));
}

namespace detail {
template <typename T>
Task<void> run_capture(Task<T> task, std::optional<T>* out, bool* done) {
  out->emplace(co_await std::move(task));
  *done = true;
}
inline Task<void> run_capture_void(Task<void> task, bool* done) {
  co_await std::move(task);
  *done = true;
}
}  // namespace detail

template <typename T>
T Loop::run(Task<T> task) {
  bool done = false;
  if constexpr (std::is_void_v<T>) {
    spawn(detail::run_capture_void(std::move(task), &done));
    while (!done) run_once_blocking();
  } else {
    std::optional<T> out;
    spawn(detail::run_capture<T>(std::move(task), &out, &done));
    while (!done) run_once_blocking();
    return std::move(*out);
  }
}

}  // namespace strata
