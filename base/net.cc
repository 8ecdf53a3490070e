#include "base/net.h"

#include <fcntl.h>
#include <netdb.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <vector>

#include "base/pipe.h"
#include "base/sync.h"

namespace strata {

namespace {
// Receive buffers are sized by use: a read that fills its buffer doubles
// the next one (up to kMaxReadChunk), one that uses under a quarter halves
// it. Received bytes are kept in buffers of their own size, so an idle
// stream holds no receive memory.
constexpr size_t kMinReadChunk = 16 * 1024;
constexpr size_t kMaxReadChunk = 256 * 1024;
// Bytes received and not consumed before the stream stops reading from the
// kernel (whose socket buffer then pushes back on the peer).
constexpr size_t kMaxBuffered = 1024 * 1024;

Error uv_error(int code, const std::string& what) {
  return Error{-code, what + ": " + uv_strerror(code)};
}
}  // namespace

// Waits for a socket to take more bytes, for writes made outside libuv's
// queue (splices). It watches a duplicate of the socket's descriptor: libuv
// allows one watcher per descriptor, and the stream's handle has it.
struct WritablePoll {
  uv_poll_t handle{};
  int fd = -1;
  std::coroutine_handle<> waiter;
  int status = 0;
};

struct StreamImpl {
  Loop* loop = nullptr;
  union {
    uv_pipe_t pipe;
    uv_tcp_t tcp;
    uv_stream_t stream;
    uv_handle_t handle;
  } h{};
  std::deque<std::vector<uint8_t>> chunks;  // received, not consumed
  size_t chunk_offset = 0;                  // consumed bytes of chunks.front()
  size_t buffered = 0;
  bool reading = false;
  bool eof = false;
  int read_error = 0;
  bool closed = false;
  bool handle_closed = false;  // aborted: libuv has released the handle
  bool orphaned = false;       // the Stream is gone: the close callback frees this
  std::coroutine_handle<> reader;
  std::vector<uint8_t> incoming;  // handed to libuv for the next read
  size_t read_size = kMinReadChunk;
  std::string peer;
  // Writes keep their submission order with tickets: a write hands its
  // bytes over when `serving` reaches its ticket. An ordinary write hands
  // them to libuv's queue (which keeps the order) and passes the turn on at
  // once; a pipe write also waits for libuv's queue to empty (`uv_writes`
  // requests not yet completed) and keeps the turn until it has spliced
  // everything.
  uint64_t next_ticket = 0;
  uint64_t serving = 0;
  size_t uv_writes = 0;
  std::unique_ptr<CoQueue> write_turn;
  WritablePoll* poll = nullptr;

  uv_stream_t* stream() { return &h.stream; }
  Task<Result<void>> co_wait_writable();
  void wake_poll_waiter();
  void close_poll();
  void start_reading();
  void received(size_t n);
  void wake_reader() {
    if (auto r = std::exchange(reader, {})) loop->post([r] { r.resume(); });
  }
};

void StreamImpl::start_reading() {
  if (reading || closed || eof) return;
  reading = true;
  uv_read_start(
      stream(),
      [](uv_handle_t* hd, size_t, uv_buf_t* buf) {
        auto* self = static_cast<StreamImpl*>(hd->data);
        self->incoming.resize(self->read_size);
        buf->base = reinterpret_cast<char*>(self->incoming.data());
        buf->len = self->read_size;
      },
      [](uv_stream_t* s, ssize_t n, const uv_buf_t*) {
        auto* self = static_cast<StreamImpl*>(s->data);
        if (n > 0) {
          self->received(static_cast<size_t>(n));
          if (self->buffered >= kMaxBuffered) {
            uv_read_stop(s);
            self->reading = false;
          }
        } else if (n < 0) {
          if (n == UV_EOF) {
            self->eof = true;
          } else {
            self->read_error = static_cast<int>(-n);
          }
          uv_read_stop(s);
          self->reading = false;
          self->incoming = {};
        }
        self->wake_reader();
      });
}

// Keeps the `n` bytes just read: in the read buffer itself when they fill
// most of it, else in a copy of their own size. Either way the stream keeps
// no read buffer between reads.
void StreamImpl::received(size_t n) {
  std::vector<uint8_t> data = std::exchange(incoming, {});
  if (n >= data.size() / 2) {
    data.resize(n);
    chunks.push_back(std::move(data));
  } else {
    chunks.emplace_back(data.begin(), data.begin() + static_cast<ptrdiff_t>(n));
  }
  buffered += n;
  if (n == read_size) {
    read_size = std::min(read_size * 2, kMaxReadChunk);
  } else if (n < read_size / 4) {
    read_size = std::max(read_size / 2, kMinReadChunk);
  }
}

namespace {
StreamImpl* new_stream_impl(Loop& loop, bool tcp) {
  auto* impl = new StreamImpl;
  impl->loop = &loop;
  if (tcp) {
    uv_tcp_init(loop.uv(), &impl->h.tcp);
  } else {
    uv_pipe_init(loop.uv(), &impl->h.pipe, 0);
  }
  impl->h.handle.data = impl;
  impl->write_turn = std::make_unique<CoQueue>(loop);
  return impl;
}

void free_stream_impl(StreamImpl* impl) {
  impl->close_poll();
  if (!uv_is_closing(&impl->h.handle)) {
    uv_close(&impl->h.handle, [](uv_handle_t* hd) { delete static_cast<StreamImpl*>(hd->data); });
  } else if (impl->handle_closed) {
    delete impl;
  } else {
    impl->orphaned = true;  // aborted, closing: on_aborted frees it
  }
}

void on_aborted(uv_handle_t* hd) {
  auto* impl = static_cast<StreamImpl*>(hd->data);
  impl->handle_closed = true;
  if (impl->orphaned) delete impl;
}

std::string describe_peer(StreamImpl* impl, bool tcp) {
  if (!tcp) return "unix";
  sockaddr_storage ss{};
  int len = sizeof(ss);
  if (uv_tcp_getpeername(&impl->h.tcp, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "tcp";
  char host[INET6_ADDRSTRLEN] = {};
  int port = 0;
  if (ss.ss_family == AF_INET) {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    uv_ip4_name(a, host, sizeof(host));
    port = ntohs(a->sin_port);
  } else {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    uv_ip6_name(a, host, sizeof(host));
    port = ntohs(a->sin6_port);
  }
  return std::string(host) + ":" + std::to_string(port);
}
}  // namespace

Stream::~Stream() {
  close();
  impl_->closed = true;
  free_stream_impl(impl_);
}

void Stream::close() {
  if (impl_->closed) return;
  impl_->closed = true;
  if (impl_->reading) uv_read_stop(impl_->stream());
  impl_->reading = false;
  impl_->wake_reader();
  impl_->wake_poll_waiter();
  impl_->write_turn->wake_all();
  uv_shutdown_t* req = new uv_shutdown_t;
  if (uv_shutdown(req, impl_->stream(), [](uv_shutdown_t* r, int) { delete r; }) != 0) delete req;
}

void Stream::abort() {
  close();
  impl_->close_poll();
  if (!uv_is_closing(&impl_->h.handle)) uv_close(&impl_->h.handle, on_aborted);
}

bool Stream::closed() const {
  return impl_->closed;
}
size_t Stream::buffered() const {
  return impl_->buffered;
}
std::string Stream::peer_name() const {
  return impl_->peer;
}

void Stream::set_send_buffer(size_t bytes) {
  if (impl_->closed) return;
  int value = static_cast<int>(std::min<size_t>(bytes, INT32_MAX));
  (void)uv_send_buffer_size(&impl_->h.handle, &value);
}

size_t Stream::send_buffer() const {
  int value = 0;  // 0 asks for the current size
  if (impl_->closed || uv_send_buffer_size(&impl_->h.handle, &value) != 0) return 0;
  return static_cast<size_t>(std::max(value, 0));
}

Task<Result<size_t>> Stream::co_read_some(std::span<uint8_t> buf) {
  StreamImpl* s = impl_;
  while (s->buffered == 0) {
    if (s->closed) co_return Error{ECONNRESET, "connection closed"};
    if (s->read_error) {
      co_return Error{s->read_error, std::string("read: ") + std::strerror(s->read_error)};
    }
    if (s->eof) co_return size_t{0};
    s->start_reading();
    struct Park {
      StreamImpl* s;
      bool await_ready() const noexcept { return false; }
      void await_suspend(std::coroutine_handle<> h) { s->reader = h; }
      void await_resume() const noexcept {}
    };
    co_await Park{s};
  }
  size_t done = 0;
  while (done < buf.size() && !s->chunks.empty()) {
    auto& front = s->chunks.front();
    size_t take = std::min(buf.size() - done, front.size() - s->chunk_offset);
    std::memcpy(buf.data() + done, front.data() + s->chunk_offset, take);
    done += take;
    s->chunk_offset += take;
    s->buffered -= take;
    if (s->chunk_offset == front.size()) {
      s->chunks.pop_front();
      s->chunk_offset = 0;
    }
  }
  if (s->buffered < kMaxBuffered / 2) s->start_reading();
  co_return done;
}

Task<Result<void>> Stream::co_read_exact(std::span<uint8_t> buf) {
  size_t done = 0;
  while (done < buf.size()) {
    auto n = co_await co_read_some(buf.subspan(done));
    if (!n) co_return std::move(n).error();
    if (*n == 0) co_return Error{ECONNRESET, "connection closed by peer"};
    done += *n;
  }
  co_return Result<void>{};
}

namespace {
struct WriteOp {
  uv_write_t req{};
  std::coroutine_handle<> waiter;
  int status = 0;
  bool done = false;
};
}  // namespace

Task<Result<void>> Stream::co_write(const IoVec& iov) {
  uint64_t ticket = impl_->next_ticket++;
  while (impl_->serving != ticket && !impl_->closed) co_await impl_->write_turn->wait();
  if (impl_->closed) co_return Error{EPIPE, "connection closed"};
  std::vector<uv_buf_t> bufs;
  bufs.reserve(iov.count());
  for (const auto& v : iov.entries()) {
    bufs.push_back(uv_buf_init(static_cast<char*>(v.iov_base), static_cast<unsigned>(v.iov_len)));
  }
  WriteOp op;
  op.req.data = &op;
  int rc = uv_write(&op.req, impl_->stream(), bufs.data(), static_cast<unsigned>(bufs.size()),
                    [](uv_write_t* r, int status) {
                      auto* o = static_cast<WriteOp*>(r->data);
                      auto* s = static_cast<StreamImpl*>(r->handle->data);
                      if (--s->uv_writes == 0) s->write_turn->wake_all();
                      o->status = status;
                      o->done = true;
                      if (o->waiter) o->waiter.resume();
                    });
  impl_->serving++;
  if (ticket + 1 != impl_->next_ticket) impl_->write_turn->wake_all();
  if (rc != 0) co_return uv_error(rc, "write");
  impl_->uv_writes++;
  struct Park {
    WriteOp& op;
    bool await_ready() const noexcept { return op.done; }
    void await_suspend(std::coroutine_handle<> h) { op.waiter = h; }
    void await_resume() const noexcept {}
  };
  co_await Park{op};
  if (op.status != 0) co_return uv_error(op.status, "write");
  co_return Result<void>{};
}

Task<Result<void>> StreamImpl::co_wait_writable() {
  if (!poll) {
    int fd = -1;
    if (uv_fileno(&h.handle, &fd) != 0) co_return Error{EPIPE, "connection closed"};
    int dup_fd = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dup_fd < 0) co_return Error{errno, std::string("dup: ") + std::strerror(errno)};
    poll = new WritablePoll;
    poll->fd = dup_fd;
    if (int rc = uv_poll_init(loop->uv(), &poll->handle, dup_fd); rc != 0) {
      ::close(dup_fd);
      delete std::exchange(poll, nullptr);
      co_return uv_error(rc, "poll");
    }
    poll->handle.data = poll;
  }
  poll->status = 0;
  int rc = uv_poll_start(&poll->handle, UV_WRITABLE, [](uv_poll_t* p, int status, int) {
    auto* w = static_cast<WritablePoll*>(p->data);
    uv_poll_stop(p);
    w->status = status;
    if (auto waiter = std::exchange(w->waiter, {})) waiter.resume();
  });
  if (rc != 0) co_return uv_error(rc, "poll");
  struct Park {
    WritablePoll& w;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) { w.waiter = h; }
    void await_resume() const noexcept {}
  };
  co_await Park{*poll};
  if (closed) co_return Error{EPIPE, "connection closed"};
  if (poll->status != 0) co_return uv_error(poll->status, "poll");
  co_return Result<void>{};
}

void StreamImpl::wake_poll_waiter() {
  if (!poll || !poll->waiter) return;
  uv_poll_stop(&poll->handle);
  loop->post([h = std::exchange(poll->waiter, {})] { h.resume(); });
}

void StreamImpl::close_poll() {
  if (!poll) return;
  uv_close(reinterpret_cast<uv_handle_t*>(&poll->handle), [](uv_handle_t* hd) {
    auto* w = static_cast<WritablePoll*>(hd->data);
    ::close(w->fd);
    delete w;
  });
  poll = nullptr;
}

Task<Result<void>> Stream::co_write_from_pipe(Pipe& pipe) {
  StreamImpl* s = impl_;
  // After every earlier write has reached the kernel, and alone.
  uint64_t ticket = s->next_ticket++;
  while (!s->closed && (s->serving != ticket || s->uv_writes > 0)) co_await s->write_turn->wait();
  if (s->closed) co_return Error{EPIPE, "connection closed"};
  int fd = -1;
  if (uv_fileno(&s->h.handle, &fd) != 0) co_return Error{EPIPE, "connection closed"};
  Result<void> r;
  while (pipe.buffered() > 0) {
    auto moved = pipe.drain_to(fd, pipe.buffered());
    if (!moved) {
      r = std::move(moved).error();
      break;
    }
    if (*moved > 0) continue;
    r = co_await s->co_wait_writable();
    if (!r) break;
  }
  s->serving++;
  s->write_turn->wake_all();
  co_return r;
}

Task<Result<void>> Stream::co_write(std::span<const uint8_t> data) {
  IoVec iov(const_cast<uint8_t*>(data.data()), data.size());
  co_return co_await co_write(iov);
}

struct ListenerImpl {
  Loop* loop = nullptr;
  bool tcp = false;
  union {
    uv_pipe_t pipe;
    uv_tcp_t tcp;
    uv_stream_t stream;
    uv_handle_t handle;
  } h{};
  Listener::AcceptFn on_accept;
  std::string path;
  bool closed = false;
};

namespace {
void on_connection(uv_stream_t* server, int status) {
  auto* impl = static_cast<ListenerImpl*>(server->data);
  if (status < 0 || impl->closed) return;
  StreamImpl* client = new_stream_impl(*impl->loop, impl->tcp);
  if (uv_accept(server, client->stream()) != 0) {
    free_stream_impl(client);
    return;
  }
  if (impl->tcp) uv_tcp_nodelay(&client->h.tcp, 1);
  client->peer = describe_peer(client, impl->tcp);
  impl->on_accept(std::make_unique<Stream>(client));
}

ListenerImpl* new_listener_impl(Loop& loop, bool tcp, Listener::AcceptFn fn) {
  auto* impl = new ListenerImpl;
  impl->loop = &loop;
  impl->tcp = tcp;
  impl->on_accept = std::move(fn);
  if (tcp) {
    uv_tcp_init(loop.uv(), &impl->h.tcp);
  } else {
    uv_pipe_init(loop.uv(), &impl->h.pipe, 0);
  }
  impl->h.handle.data = impl;
  return impl;
}

void free_listener_impl(ListenerImpl* impl) {
  if (!uv_is_closing(&impl->h.handle)) {
    uv_close(&impl->h.handle, [](uv_handle_t* hd) { delete static_cast<ListenerImpl*>(hd->data); });
  }
}

Result<sockaddr_storage> resolve(const std::string& host, uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  std::string service = std::to_string(port);
  int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &res);
  if (rc != 0 || !res) {
    return Error{EINVAL, "address resolution failed for '" + host + "': " + gai_strerror(rc)};
  }
  sockaddr_storage ss{};
  std::memcpy(&ss, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  return ss;
}
}  // namespace

Result<std::unique_ptr<Listener>> Listener::listen_unix(Loop& loop, const std::string& path,
                                                        AcceptFn on_accept, int backlog) {
  ListenerImpl* impl = new_listener_impl(loop, false, std::move(on_accept));
  ::unlink(path.c_str());
  int rc = uv_pipe_bind(&impl->h.pipe, path.c_str());
  if (rc == 0) rc = uv_listen(&impl->h.stream, backlog, on_connection);
  if (rc != 0) {
    free_listener_impl(impl);
    return uv_error(rc, "Failed to listen on '" + path + "'");
  }
  impl->path = path;
  return std::make_unique<Listener>(impl);
}

Result<std::unique_ptr<Listener>> Listener::listen_tcp(Loop& loop, const std::string& host,
                                                       uint16_t port, AcceptFn on_accept,
                                                       int backlog) {
  STRATA_TRY_ASSIGN(sockaddr_storage addr, resolve(host, port));
  ListenerImpl* impl = new_listener_impl(loop, true, std::move(on_accept));
  int rc = uv_tcp_bind(&impl->h.tcp, reinterpret_cast<sockaddr*>(&addr), 0);
  if (rc == 0) rc = uv_listen(&impl->h.stream, backlog, on_connection);
  if (rc != 0) {
    free_listener_impl(impl);
    return uv_error(rc, "Failed to listen on " + host + ":" + std::to_string(port));
  }
  return std::make_unique<Listener>(impl);
}

Listener::~Listener() {
  close();
  free_listener_impl(impl_);
}

void Listener::close() {
  if (impl_->closed) return;
  impl_->closed = true;
  if (!impl_->path.empty()) ::unlink(impl_->path.c_str());
}

uint16_t Listener::port() const {
  sockaddr_storage ss{};
  int len = sizeof(ss);
  if (uv_tcp_getsockname(&impl_->h.tcp, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return 0;
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
}

const std::string& Listener::path() const {
  return impl_->path;
}

namespace {
struct ConnectOp {
  uv_connect_t req{};
  std::coroutine_handle<> waiter;
  int status = 0;
  bool done = false;
};
struct ConnectPark {
  ConnectOp& op;
  bool await_ready() const noexcept { return op.done; }
  void await_suspend(std::coroutine_handle<> h) { op.waiter = h; }
  void await_resume() const noexcept {}
};
void on_connect(uv_connect_t* r, int status) {
  auto* o = static_cast<ConnectOp*>(r->data);
  o->status = status;
  o->done = true;
  if (o->waiter) o->waiter.resume();
}
}  // namespace

int default_listen_backlog() {
  return SOMAXCONN;
}

void ignore_sigpipe_by_default() {
  struct sigaction current {};
  if (sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
    signal(SIGPIPE, SIG_IGN);
  }
}

Task<Result<std::unique_ptr<Stream>>> co_connect_unix(Loop& loop, std::string path) {
  StreamImpl* impl = new_stream_impl(loop, false);
  auto stream = std::make_unique<Stream>(impl);
  ConnectOp op;
  op.req.data = &op;
  uv_pipe_connect(&op.req, &impl->h.pipe, path.c_str(), on_connect);
  co_await ConnectPark{op};
  if (op.status != 0) co_return uv_error(op.status, "Failed to connect to '" + path + "'");
  impl->peer = path;
  co_return std::move(stream);
}

Task<Result<std::unique_ptr<Stream>>> co_connect_tcp(Loop& loop, std::string host, uint16_t port) {
  auto addr = co_await loop.offload([&] { return resolve(host, port); });
  if (!addr) co_return std::move(addr).error();
  StreamImpl* impl = new_stream_impl(loop, true);
  auto stream = std::make_unique<Stream>(impl);
  ConnectOp op;
  op.req.data = &op;
  int rc = uv_tcp_connect(&op.req, &impl->h.tcp, reinterpret_cast<sockaddr*>(&*addr), on_connect);
  if (rc != 0) co_return uv_error(rc, "connect");
  co_await ConnectPark{op};
  if (op.status != 0) {
    co_return uv_error(op.status, "Failed to connect to " + host + ":" + std::to_string(port));
  }
  uv_tcp_nodelay(&impl->h.tcp, 1);
  impl->peer = host + ":" + std::to_string(port);
  co_return std::move(stream);
}

}  // namespace strata
