#include "base/loop.h"

#include "base/io_ring.h"

#include <uv.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace strata {

namespace {

// A coroutine that starts eagerly and frees itself when done; used to run a
// Task<void> detached.
struct DetachedCoroutine {
  struct promise_type {
    DetachedCoroutine get_return_object() noexcept { return {}; }
    std::suspend_never initial_suspend() const noexcept { return {}; }
    std::suspend_never final_suspend() const noexcept { return {}; }
    void return_void() const noexcept {}
    void unhandled_exception() const noexcept { std::terminate(); }
  };
};

DetachedCoroutine run_detached(Task<void> task) { co_await std::move(task); }

}  // namespace

Loop::Loop(unsigned threadpool_size) {
  if (!std::getenv("UV_THREADPOOL_SIZE")) {
    setenv("UV_THREADPOOL_SIZE", std::to_string(threadpool_size).c_str(), 0);
  }
  loop_ = new uv_loop_t;
  uv_loop_init(loop_);
  owns_loop_ = true;
  init_handles();
}

Loop::Loop(uv_loop_t* host_loop) : loop_(host_loop) { init_handles(); }

void Loop::init_handles() {
  auto* async = new uv_async_t;
  uv_async_init(loop_, async, [](uv_async_t* h) { on_async(h); });
  async->data = this;
  uv_unref(reinterpret_cast<uv_handle_t*>(async));  // posts alone keep nothing alive
  async_ = async;
  auto* idle = new uv_idle_t;
  uv_idle_init(loop_, idle);
  idle->data = this;
  idle_ = idle;
  thread_id_ = std::this_thread::get_id();
}

Loop::~Loop() {
  drain_posted();
  ring_.reset();  // waits for requests in the kernel, closes its handles
  auto close_and_free = [](uv_handle_t* h) {
    if (h->type == UV_ASYNC) {
      delete reinterpret_cast<uv_async_t*>(h);
    } else {
      delete reinterpret_cast<uv_idle_t*>(h);
    }
  };
  uv_close(static_cast<uv_handle_t*>(async_), close_and_free);
  uv_close(static_cast<uv_handle_t*>(idle_), close_and_free);
  if (owns_loop_) {
    // Let close callbacks and short-lived work finish, then close whatever
    // handles their owners left open, so destruction never hangs.
    for (int i = 0; i < 16 && uv_run(loop_, UV_RUN_NOWAIT) != 0; i++) {
    }
    if (uv_loop_close(loop_) != 0) {
      uv_walk(
          loop_,
          [](uv_handle_t* h, void*) {
            if (!uv_is_closing(h)) uv_close(h, nullptr);
          },
          nullptr);
      uv_run(loop_, UV_RUN_DEFAULT);
      uv_loop_close(loop_);
    }
    delete loop_;
  } else {
    uv_run(loop_, UV_RUN_NOWAIT);
  }
}

void Loop::post(std::function<void()> fn) {
  {
    std::lock_guard lock(posted_mutex_);
    posted_.push_back(std::move(fn));
  }
  if (on_loop_thread()) {
    uv_idle_start(static_cast<uv_idle_t*>(idle_), [](uv_idle_t* h) { on_idle(h); });
  } else {
    uv_async_send(static_cast<uv_async_t*>(async_));
  }
}

void Loop::on_async(void* handle) {
  auto* self = static_cast<Loop*>(static_cast<uv_async_t*>(handle)->data);
  self->drain_posted();
}

void Loop::on_idle(void* handle) {
  auto* self = static_cast<Loop*>(static_cast<uv_idle_t*>(handle)->data);
  self->drain_posted();
  self->resume_yielded();
  self->update_idle();
}

void Loop::add_yielded(std::coroutine_handle<> h) {
  yielded_.push_back(h);
  uv_idle_start(static_cast<uv_idle_t*>(idle_), [](uv_idle_t* h) { on_idle(h); });
}

// Resumes the coroutines that yielded before this iteration, once each:
// one that yields again waits for the next iteration (after the poll).
void Loop::resume_yielded() {
  std::deque<std::coroutine_handle<>> batch;
  batch.swap(yielded_);
  for (auto h : batch) h.resume();
}

void Loop::update_idle() {
  bool empty;
  {
    std::lock_guard lock(posted_mutex_);
    empty = posted_.empty();
  }
  if (empty && yielded_.empty()) uv_idle_stop(static_cast<uv_idle_t*>(idle_));
}

void Loop::drain_posted() {
  for (;;) {
    std::deque<std::function<void()>> batch;
    {
      std::lock_guard lock(posted_mutex_);
      batch.swap(posted_);
      if (batch.empty()) break;
    }
    for (auto& fn : batch) fn();
  }
  if (yielded_.empty()) uv_idle_stop(static_cast<uv_idle_t*>(idle_));
}

void Loop::spawn(Task<void> task) { run_detached(std::move(task)); }

bool Loop::alive() const { return uv_loop_alive(loop_) != 0; }

void Loop::run_once_blocking() {
  if (!alive()) {
    bool pending;
    {
      std::lock_guard lock(posted_mutex_);
      pending = !posted_.empty();
    }
    if (!pending) {
      std::fprintf(stderr, "strata: Loop::run: task can never complete (nothing left to wait on)\n");
      std::abort();
    }
  }
  uv_run(loop_, UV_RUN_ONCE);
}

void Loop::run_forever() {
  stop_requested_ = false;
  while (!stop_requested_ && alive()) uv_run(loop_, UV_RUN_ONCE);
}

void Loop::stop() {
  stop_requested_ = true;
  uv_stop(loop_);
}

uint64_t Loop::now_ns() { return uv_hrtime(); }

IoRing* Loop::io_ring() {
  if (ring_probed_) return ring_.get();
  ring_probed_ = true;
  const char* env = std::getenv("STRATA_IO_URING");
  if (env && std::string(env) == "0") {
    ring_error_ = "io_uring is turned off (STRATA_IO_URING=0)";
    return nullptr;
  }
  auto ring = IoRing::create(*this);
  if (!ring) {
    ring_error_ = ring.error().message;
    return nullptr;
  }
  ring_ = std::move(*ring);
  return ring_.get();
}

const std::string& Loop::io_ring_error() {
  io_ring();
  return ring_error_;
}

namespace {
struct SleepState {
  uv_timer_t timer;
  std::coroutine_handle<> waiter;
};
struct SleepAwaiter {
  Loop& loop;
  uint64_t ms;
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) {
    auto* state = new SleepState;
    state->waiter = h;
    uv_timer_init(loop.uv(), &state->timer);
    state->timer.data = state;
    // libuv counts from the loop's cached time, which lags after a long
    // callback: refresh it so the sleep lasts at least `ms` from now.
    uv_update_time(loop.uv());
    uv_timer_start(
        &state->timer,
        [](uv_timer_t* t) {
          auto* s = static_cast<SleepState*>(t->data);
          auto waiter = s->waiter;
          uv_close(reinterpret_cast<uv_handle_t*>(t),
                   [](uv_handle_t* h) { delete static_cast<SleepState*>(h->data); });
          waiter.resume();
        },
        ms, 0);
  }
  void await_resume() const noexcept {}
};
}  // namespace

Task<void> Loop::co_sleep(uint64_t ms) { co_await SleepAwaiter{*this, ms}; }

namespace detail {

void OffloadBase::await_suspend(std::coroutine_handle<> h) {
  waiter_ = h;
  auto* req = new uv_work_t;
  req->data = this;
  request_ = req;
  uv_queue_work(
      loop_.uv(), req, [](uv_work_t* r) { work_cb(r->data); },
      [](uv_work_t* r, int) {
        void* self = r->data;
        delete r;
        after_cb(self);
      });
}

void OffloadBase::work_cb(void* self) { static_cast<OffloadBase*>(self)->run_blocking(); }

void OffloadBase::after_cb(void* self) {
  auto* op = static_cast<OffloadBase*>(self);
  op->request_ = nullptr;
  op->waiter_.resume();
}

}  // namespace detail

}  // namespace strata
