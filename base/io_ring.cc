#include "base/io_ring.h"

#include <linux/io_uring.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <uv.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "base/loop.h"

namespace strata {

namespace {

int sys_setup(unsigned entries, io_uring_params* p) {
  return static_cast<int>(::syscall(__NR_io_uring_setup, entries, p));
}
int sys_enter(int fd, unsigned to_submit, unsigned min_complete, unsigned flags) {
  return static_cast<int>(
      ::syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, nullptr, 0));
}
int sys_register(int fd, unsigned opcode, void* arg, unsigned count) {
  return static_cast<int>(::syscall(__NR_io_uring_register, fd, opcode, arg, count));
}

Error ring_error(int err, const std::string& what) {
  return Error{err, "io_uring " + what + ": " + std::strerror(err)};
}

uint32_t load_acquire(const uint32_t* p) {
  return std::atomic_ref<uint32_t>(*const_cast<uint32_t*>(p)).load(std::memory_order_acquire);
}
void store_release(uint32_t* p, uint32_t v) {
  std::atomic_ref<uint32_t>(*p).store(v, std::memory_order_release);
}

// The operations fs:: sends through the ring; a kernel without one of them
// gets the thread pool for everything.
Result<void> probe_operations(int fd) {
  constexpr unsigned kOps = 64;
  std::vector<uint8_t> buf(sizeof(io_uring_probe) + kOps * sizeof(io_uring_probe_op));
  auto* probe = reinterpret_cast<io_uring_probe*>(buf.data());
  if (sys_register(fd, IORING_REGISTER_PROBE, probe, kOps) < 0) {
    return ring_error(errno, "probe (kernel too old)");
  }
  for (int op : {IORING_OP_READV, IORING_OP_WRITEV, IORING_OP_FSYNC, IORING_OP_FALLOCATE}) {
    if (op > probe->last_op || !(probe->ops[op].flags & IO_URING_OP_SUPPORTED)) {
      return Error{ENOTSUP, "io_uring lacks operation " + std::to_string(op)};
    }
  }
  return {};
}

}  // namespace

// The three shared mappings: submission ring, completion ring (one mapping
// with the first on kernels that offer it), and the submission entries.
struct IoRing::Mapping {
  void* sq = MAP_FAILED;
  size_t sq_size = 0;
  void* cq = MAP_FAILED;
  size_t cq_size = 0;
  io_uring_sqe* sqes = static_cast<io_uring_sqe*>(MAP_FAILED);
  size_t sqes_size = 0;
  uint32_t* sq_head = nullptr;
  uint32_t* sq_tail = nullptr;
  uint32_t sq_mask = 0;
  uint32_t* cq_head = nullptr;
  uint32_t* cq_tail = nullptr;
  uint32_t cq_mask = 0;
  io_uring_cqe* cqes = nullptr;

  ~Mapping() {
    if (sqes != MAP_FAILED) ::munmap(sqes, sqes_size);
    if (cq != MAP_FAILED && cq != sq) ::munmap(cq, cq_size);
    if (sq != MAP_FAILED) ::munmap(sq, sq_size);
  }
};

Result<std::unique_ptr<IoRing>> IoRing::create(Loop& loop, unsigned depth) {
  io_uring_params params{};
  params.flags = IORING_SETUP_CQSIZE;
  params.cq_entries = 2 * depth;
  int fd = sys_setup(depth, &params);
  if (fd < 0) return ring_error(errno, "setup");
  std::unique_ptr<IoRing> ring(new IoRing(loop, fd, params.sq_entries));
  if (auto r = probe_operations(fd); !r) return r.error();
  if (auto r = ring->map(&params); !r) return r.error();
  if (auto r = ring->start_handles(); !r) return r.error();
  return ring;
}

IoRing::IoRing(Loop& loop, int fd, unsigned depth)
    : loop_(loop), fd_(fd), depth_(depth), map_(std::make_unique<Mapping>()) {}

Result<void> IoRing::map(const void* raw) {
  const auto& p = *static_cast<const io_uring_params*>(raw);
  Mapping& m = *map_;
  m.sq_size = p.sq_off.array + p.sq_entries * sizeof(uint32_t);
  m.cq_size = p.cq_off.cqes + p.cq_entries * sizeof(io_uring_cqe);
  bool single = (p.features & IORING_FEAT_SINGLE_MMAP) != 0;
  if (single) m.sq_size = m.cq_size = std::max(m.sq_size, m.cq_size);
  constexpr int kProt = PROT_READ | PROT_WRITE;
  constexpr int kFlags = MAP_SHARED | MAP_POPULATE;
  m.sq = ::mmap(nullptr, m.sq_size, kProt, kFlags, fd_, IORING_OFF_SQ_RING);
  if (m.sq == MAP_FAILED) return ring_error(errno, "mmap");
  m.cq = single ? m.sq : ::mmap(nullptr, m.cq_size, kProt, kFlags, fd_, IORING_OFF_CQ_RING);
  if (m.cq == MAP_FAILED) return ring_error(errno, "mmap");
  m.sqes_size = p.sq_entries * sizeof(io_uring_sqe);
  void* sqes = ::mmap(nullptr, m.sqes_size, kProt, kFlags, fd_, IORING_OFF_SQES);
  if (sqes == MAP_FAILED) return ring_error(errno, "mmap");
  m.sqes = static_cast<io_uring_sqe*>(sqes);
  auto* sq = static_cast<uint8_t*>(m.sq);
  auto* cq = static_cast<uint8_t*>(m.cq);
  m.sq_head = reinterpret_cast<uint32_t*>(sq + p.sq_off.head);
  m.sq_tail = reinterpret_cast<uint32_t*>(sq + p.sq_off.tail);
  m.sq_mask = *reinterpret_cast<uint32_t*>(sq + p.sq_off.ring_mask);
  auto* array = reinterpret_cast<uint32_t*>(sq + p.sq_off.array);
  for (uint32_t i = 0; i < p.sq_entries; i++) array[i] = i;  // entry i in slot i
  m.cq_head = reinterpret_cast<uint32_t*>(cq + p.cq_off.head);
  m.cq_tail = reinterpret_cast<uint32_t*>(cq + p.cq_off.tail);
  m.cq_mask = *reinterpret_cast<uint32_t*>(cq + p.cq_off.ring_mask);
  m.cqes = reinterpret_cast<io_uring_cqe*>(cq + p.cq_off.cqes);
  return {};
}

Result<void> IoRing::start_handles() {
  auto* poll = new uv_poll_t;
  if (int rc = uv_poll_init(loop_.uv(), poll, fd_); rc != 0) {
    delete poll;  // never initialized: nothing for libuv to close
    return Error{-rc, std::string("io_uring: the loop cannot watch the ring: ") + uv_strerror(rc)};
  }
  poll->data = this;
  poll_ = poll;
  uv_poll_start(poll, UV_READABLE,
                [](uv_poll_t* h, int, int) { static_cast<IoRing*>(h->data)->reap(); });
  uv_unref(reinterpret_cast<uv_handle_t*>(poll));
  auto* prepare = new uv_prepare_t;
  uv_prepare_init(loop_.uv(), prepare);
  prepare->data = this;
  uv_prepare_start(prepare, [](uv_prepare_t* h) { static_cast<IoRing*>(h->data)->submit(); });
  uv_unref(reinterpret_cast<uv_handle_t*>(prepare));
  prepare_ = prepare;
  return {};
}

IoRing::~IoRing() {
  closing_ = true;
  std::vector<RingRequest*> done;
  if (map_->sq != MAP_FAILED) finish_all(done);
  if (poll_) {
    uv_close(static_cast<uv_handle_t*>(poll_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
  }
  if (prepare_) {
    uv_close(static_cast<uv_handle_t*>(prepare_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_prepare_t*>(h); });
  }
  map_.reset();
  ::close(fd_);
  for (RingRequest* r : done) r->waiter.resume();
}

// Submits what is queued and waits until the kernel has completed all of
// it; the requests that never reached the kernel get ECANCELED.
void IoRing::finish_all(std::vector<RingRequest*>& done) {
  while (unsubmitted_ > 0) {
    int n = sys_enter(fd_, unsubmitted_, 0, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      take_unsubmitted(-ECANCELED, done);
      break;
    }
    unsubmitted_ -= std::min<uint32_t>(unsubmitted_, static_cast<uint32_t>(n));
  }
  while (in_flight_ > 0) {
    take_completions(done);
    if (in_flight_ > 0 && sys_enter(fd_, 0, 1, IORING_ENTER_GETEVENTS) < 0 && errno != EINTR) {
      break;  // cannot happen with a valid ring; do not spin
    }
  }
  for (RingRequest* r = waiting_head_; r; r = r->next) {
    r->result = -ECANCELED;
    done.push_back(r);
  }
  waiting_head_ = waiting_tail_ = nullptr;
  waiting_count_ = 0;
}

RingAwaiter IoRing::transfer(RingRequest::Op op, int fd, const struct iovec* iov, uint32_t count,
                             uint64_t offset) {
  RingRequest r;
  r.op = op;
  r.fd = fd;
  r.iov = iov;
  r.count = count;
  r.offset = offset;
  return RingAwaiter(*this, r);
}

RingAwaiter IoRing::fdatasync(int fd) {
  RingRequest r;
  r.op = RingRequest::Op::kFdatasync;
  r.fd = fd;
  return RingAwaiter(*this, r);
}

RingAwaiter IoRing::fallocate(int fd, int mode, uint64_t offset, uint64_t length) {
  RingRequest r;
  r.op = RingRequest::Op::kFallocate;
  r.fd = fd;
  r.mode = mode;
  r.offset = offset;
  r.length = length;
  return RingAwaiter(*this, r);
}

bool RingAwaiter::await_suspend(std::coroutine_handle<> h) {
  request_.waiter = h;
  return ring_.enqueue(&request_);
}

bool IoRing::enqueue(RingRequest* request) {
  if (closing_) {
    request->result = -ECANCELED;
    return false;
  }
  if (in_flight_ < depth_) {
    push_sqe(request);
  } else {
    request->next = nullptr;
    (waiting_tail_ ? waiting_tail_->next : waiting_head_) = request;
    waiting_tail_ = request;
    waiting_count_++;
  }
  update_ref();
  return true;
}

// Writes the request's entry at the submission tail and publishes it; the
// kernel sees it at the next submit().
void IoRing::push_sqe(RingRequest* request) {
  Mapping& m = *map_;
  uint32_t tail = *m.sq_tail;
  io_uring_sqe& sqe = m.sqes[tail & m.sq_mask];
  std::memset(&sqe, 0, sizeof sqe);
  sqe.fd = request->fd;
  sqe.off = request->offset;
  sqe.user_data = reinterpret_cast<uint64_t>(request);
  switch (request->op) {
    case RingRequest::Op::kReadv:
    case RingRequest::Op::kWritev:
      sqe.opcode = request->op == RingRequest::Op::kReadv ? IORING_OP_READV : IORING_OP_WRITEV;
      sqe.addr = reinterpret_cast<uint64_t>(request->iov);
      sqe.len = request->count;
      break;
    case RingRequest::Op::kFdatasync:
      sqe.opcode = IORING_OP_FSYNC;
      sqe.fsync_flags = IORING_FSYNC_DATASYNC;
      break;
    case RingRequest::Op::kFallocate:
      sqe.opcode = IORING_OP_FALLOCATE;
      sqe.addr = request->length;  // the kernel takes the length here
      sqe.len = static_cast<uint32_t>(request->mode);
      break;
  }
  store_release(m.sq_tail, tail + 1);
  in_flight_++;
  unsubmitted_++;
}

// The prepare callback: one io_uring_enter for everything queued since the
// last one. A refusal (out of memory) fails the requests it did not take,
// with its error, so that fs:: falls back to the thread pool for them.
void IoRing::submit() {
  while (unsubmitted_ > 0) {
    submit_calls_++;
    int n = sys_enter(fd_, unsubmitted_, 0, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      fail_unsubmitted(-errno);
      return;
    }
    unsubmitted_ -= std::min<uint32_t>(unsubmitted_, static_cast<uint32_t>(n));
    if (n == 0) {
      fail_unsubmitted(-EAGAIN);
      return;
    }
  }
}

void IoRing::fail_unsubmitted(int64_t error) {
  std::vector<RingRequest*> failed;
  take_unsubmitted(error, failed);
  admit_waiting();
  update_ref();
  for (RingRequest* r : failed) r->waiter.resume();
}

// Takes back the entries the kernel did not consume (between its head and
// our tail), giving their requests `error`.
void IoRing::take_unsubmitted(int64_t error, std::vector<RingRequest*>& out) {
  Mapping& m = *map_;
  uint32_t head = load_acquire(m.sq_head);
  uint32_t tail = *m.sq_tail;
  for (uint32_t i = head; i != tail; i++) {
    auto* r = reinterpret_cast<RingRequest*>(m.sqes[i & m.sq_mask].user_data);
    r->result = error;
    out.push_back(r);
    in_flight_--;
  }
  store_release(m.sq_tail, head);
  unsubmitted_ = 0;
}

// Takes the completions the kernel posted, giving each request its result.
void IoRing::take_completions(std::vector<RingRequest*>& out) {
  Mapping& m = *map_;
  uint32_t head = *m.cq_head;
  uint32_t tail = load_acquire(m.cq_tail);
  for (; head != tail; head++) {
    const io_uring_cqe& cqe = m.cqes[head & m.cq_mask];
    auto* request = reinterpret_cast<RingRequest*>(cqe.user_data);
    request->result = cqe.res;
    out.push_back(request);
    in_flight_--;
    completed_++;
  }
  store_release(m.cq_head, tail);
}

// The poll callback: takes every completion, lets waiting requests into the
// freed slots, then resumes the completed requests' coroutines.
void IoRing::reap() {
  std::vector<RingRequest*> done;
  done.swap(reaped_);  // reuses the last batch's allocation
  take_completions(done);
  admit_waiting();
  update_ref();
  for (RingRequest* r : done) r->waiter.resume();
  done.clear();
  reaped_.swap(done);
}

void IoRing::admit_waiting() {
  while (waiting_head_ && in_flight_ < depth_) {
    RingRequest* r = waiting_head_;
    waiting_head_ = r->next;
    if (!waiting_head_) waiting_tail_ = nullptr;
    waiting_count_--;
    push_sqe(r);
  }
}

// The poll handle keeps the loop alive exactly while requests are pending.
void IoRing::update_ref() {
  bool busy = in_flight_ > 0 || waiting_count_ > 0;
  if (busy == referenced_) return;
  referenced_ = busy;
  auto* h = static_cast<uv_handle_t*>(poll_);
  busy ? uv_ref(h) : uv_unref(h);
}

}  // namespace strata
