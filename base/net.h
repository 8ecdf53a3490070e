// Stream sockets (Unix and TCP) and listeners for the protocol servers and
// clients (QMP, NBD).
//
// Contract: a Stream buffers incoming bytes up to a bound (1 MiB) and stops
// reading from the kernel while the consumer lags (backpressure); an idle
// stream holds no receive buffer. Writes complete in
// submission order. close() is idempotent, fails pending reads with ECONNRESET
// and makes later operations fail with EPIPE. Destroying a Stream or Listener
// closes it; its libuv handle is released asynchronously. Writes from a
// pipe (splice) share the ordering of the other writes.
// Thread rules: loop-thread only. At most one coroutine reads at a time;
// several may write.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "base/loop.h"
#include "strata/iovec.h"
#include "strata/result.h"

namespace strata {

struct StreamImpl;
class Pipe;

class Stream {
 public:
  explicit Stream(StreamImpl* impl) : impl_(impl) {}
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // Reads whatever is available (at least one byte); 0 means end of stream.
  Task<Result<size_t>> co_read_some(std::span<uint8_t> buf);
  // Reads exactly buf.size() bytes; end of stream first is ECONNRESET.
  Task<Result<void>> co_read_exact(std::span<uint8_t> buf);
  Task<Result<void>> co_write(const IoVec& iov);
  Task<Result<void>> co_write(std::span<const uint8_t> data);
  // Writes everything buffered in `pipe` by splicing it into the socket, in
  // order with the other writes (it waits for the writes queued before it,
  // and later ones wait for it). Pages the pipe references reach the peer
  // without a copy in this process (base/pipe.h). On failure part of the
  // pipe may have been written; the connection is then unusable.
  Task<Result<void>> co_write_from_pipe(Pipe& pipe);
  // Stops reading and writing; pending reads fail. Writes already queued
  // still go out (they complete when the peer reads them).
  void close();
  // close(), and writes not yet handed to the kernel fail at once
  // (ECANCELED) instead of waiting for a peer that may never read: for
  // dropping a client, not for ending a conversation.
  void abort();
  bool closed() const;
  // Bytes received but not yet consumed.
  size_t buffered() const;
  // Asks the kernel for a send buffer of `bytes` (SO_SNDBUF; the kernel caps
  // it at net.core.wmem_max). A reply that fits is handed over in one
  // syscall instead of several rounds of waiting for the peer to drain.
  // Best effort: failures are ignored.
  void set_send_buffer(size_t bytes);
  // The send buffer the kernel uses now (SO_SNDBUF), 0 if unknown.
  size_t send_buffer() const;
  std::string peer_name() const;

 private:
  StreamImpl* impl_;
};

struct ListenerImpl;

// The listen backlog of every listener unless told otherwise: the largest
// the system allows (SOMAXCONN; the kernel caps it at net.core.somaxconn),
// as qemu-nbd and QEMU's NBD server use, so that a burst of connections is
// queued by the kernel instead of refused (EAGAIN on a Unix socket).
int default_listen_backlog();

class Listener {
 public:
  using AcceptFn = std::function<void(std::unique_ptr<Stream>)>;
  // Removes a stale socket file first; the file is removed again on close.
  static Result<std::unique_ptr<Listener>> listen_unix(Loop& loop, const std::string& path,
                                                       AcceptFn on_accept,
                                                       int backlog = default_listen_backlog());
  // `host` is a numeric address or a name; port 0 picks a free port.
  static Result<std::unique_ptr<Listener>> listen_tcp(Loop& loop, const std::string& host,
                                                      uint16_t port, AcceptFn on_accept,
                                                      int backlog = default_listen_backlog());
  explicit Listener(ListenerImpl* impl) : impl_(impl) {}
  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  uint16_t port() const;            // TCP only
  const std::string& path() const;  // Unix only
  void close();

 private:
  ListenerImpl* impl_;
};

// A write to a socket whose peer has gone must fail with EPIPE, not kill the
// process: ignores SIGPIPE unless the host installed a handler (QEMU ignores
// it process-wide too). Called by the NBD client and server.
void ignore_sigpipe_by_default();

Task<Result<std::unique_ptr<Stream>>> co_connect_unix(Loop& loop, std::string path);
Task<Result<std::unique_ptr<Stream>>> co_connect_tcp(Loop& loop, std::string host, uint16_t port);

}  // namespace strata
