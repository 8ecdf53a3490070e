// IoRing: file I/O through the kernel's io_uring, driven by a Loop.
//
// Requests enter the submission ring as they come and reach the kernel in
// one io_uring_enter per loop iteration (a prepare callback, just before
// the loop polls), so a burst of requests from one turn of the loop costs
// one syscall. The loop watches the ring's descriptor: when completions
// arrive, the poll callback reaps them all and resumes their coroutines.
// At most depth() requests are in the ring at once; later ones wait in
// FIFO order for a completion (back-pressure), so the completion ring,
// twice as deep, never overflows. The ring keeps the loop alive only while
// requests are in it or waiting.
//
// Contract: create() fails, saying why, when the kernel lacks io_uring,
// refuses it (seccomp, the io_uring_disabled sysctl, a container), or lacks
// an operation Strata needs (readv, writev, fsync, fallocate). Results are
// raw: bytes moved or -errno, short transfers included; fs:: retries short
// transfers and falls back to the thread pool on -EAGAIN.
// Thread rules: loop thread only. A request's buffers and iovec array must
// stay valid until its result is awaited. The destructor waits for the
// requests already in the kernel, so no buffer is touched after it returns,
// then resumes every waiter: with the kernel's result, or ECANCELED for a
// request that never reached it (or comes while the ring closes).
#pragma once

#include <sys/uio.h>

#include <coroutine>
#include <cstdint>
#include <memory>
#include <vector>

#include "strata/result.h"

namespace strata {

class Loop;
class IoRing;

// One request, kept in the awaiting coroutine's frame.
struct RingRequest {
  enum class Op : uint8_t { kReadv, kWritev, kFdatasync, kFallocate };
  Op op = Op::kReadv;
  int fd = -1;
  uint64_t offset = 0;
  const struct iovec* iov = nullptr;  // readv, writev
  uint32_t count = 0;                 // iovec entries
  uint64_t length = 0;                // fallocate
  int mode = 0;                       // fallocate
  int64_t result = 0;
  std::coroutine_handle<> waiter;
  RingRequest* next = nullptr;  // in IoRing's waiting list
};

// co_await yields the request's raw result (bytes or -errno).
class RingAwaiter {
 public:
  RingAwaiter(IoRing& ring, RingRequest request) : ring_(ring), request_(request) {}
  bool await_ready() const noexcept { return false; }
  bool await_suspend(std::coroutine_handle<> h);
  int64_t await_resume() const noexcept { return request_.result; }

 private:
  IoRing& ring_;
  RingRequest request_;
};

class IoRing {
 public:
  static constexpr unsigned kDefaultDepth = 256;

  static Result<std::unique_ptr<IoRing>> create(Loop& loop, unsigned depth = kDefaultDepth);
  ~IoRing();
  IoRing(const IoRing&) = delete;
  IoRing& operator=(const IoRing&) = delete;

  // A readv (op kReadv) or writev (kWritev).
  RingAwaiter transfer(RingRequest::Op op, int fd, const struct iovec* iov, uint32_t count,
                       uint64_t offset);
  RingAwaiter fdatasync(int fd);
  RingAwaiter fallocate(int fd, int mode, uint64_t offset, uint64_t length);

  unsigned depth() const { return depth_; }
  // Requests in the ring (queued or in the kernel), and those waiting for
  // room.
  size_t in_flight() const { return in_flight_; }
  size_t waiting() const { return waiting_count_; }
  // Completions reaped so far, and io_uring_enter calls made to submit.
  uint64_t completed() const { return completed_; }
  uint64_t submit_calls() const { return submit_calls_; }

 private:
  friend class RingAwaiter;
  struct Mapping;
  IoRing(Loop& loop, int fd, unsigned depth);
  Result<void> map(const void* params);
  Result<void> start_handles();
  bool enqueue(RingRequest* request);
  void push_sqe(RingRequest* request);
  void submit();
  void fail_unsubmitted(int64_t error);
  void take_unsubmitted(int64_t error, std::vector<RingRequest*>& out);
  void take_completions(std::vector<RingRequest*>& out);
  void reap();
  void admit_waiting();
  void update_ref();
  void finish_all(std::vector<RingRequest*>& done);

  Loop& loop_;
  int fd_;
  unsigned depth_;
  std::unique_ptr<Mapping> map_;
  void* poll_ = nullptr;     // uv_poll_t*
  void* prepare_ = nullptr;  // uv_prepare_t*
  bool referenced_ = false;
  bool closing_ = false;
  size_t in_flight_ = 0;
  uint32_t unsubmitted_ = 0;
  RingRequest* waiting_head_ = nullptr;
  RingRequest* waiting_tail_ = nullptr;
  size_t waiting_count_ = 0;
  std::vector<RingRequest*> reaped_;  // reap()'s buffer, kept between batches
  uint64_t completed_ = 0;
  uint64_t submit_calls_ = 0;
};

}  // namespace strata
