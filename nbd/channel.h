// Channel: the byte stream an NBD connection talks over, plain or TLS.
//
// Contract: co_read_exact() fills the whole buffer or fails (ECONNRESET at
// end of stream). co_write() queues the whole message at once, so messages
// written by concurrent coroutines never interleave, and completes when the
// bytes are handed to the kernel; writes complete in submission order.
// close() is idempotent and fails a pending read; abort() also fails the
// writes a peer that does not read holds up. A channel that
// can_splice() also writes a message built in a Pipe (co_write_from_pipe),
// ordered with the other writes; TLS channels cannot (their bytes are
// encrypted in this process).
// Thread rules: loop-thread only; one reader at a time, many writers.
#pragma once

#include <memory>
#include <span>

#include "base/net.h"
#include "strata/iovec.h"
#include "strata/result.h"
#include "strata/task.h"

namespace strata::nbd {

class Channel {
 public:
  virtual ~Channel() = default;
  virtual Task<Result<void>> co_read_exact(std::span<uint8_t> buf) = 0;
  virtual Task<Result<void>> co_write(const IoVec& iov) = 0;
  virtual void close() = 0;
  // close(), dropping what was not yet handed to the kernel: a client that
  // does not read cannot hold up its own disconnection.
  virtual void abort() { close(); }
  virtual bool closed() const = 0;
  virtual bool is_tls() const { return false; }
  virtual bool can_splice() const { return false; }
  virtual Task<Result<void>> co_write_from_pipe(Pipe&) {
    co_return Error{ENOTSUP, "this channel cannot splice"};
  }

  Task<Result<void>> co_write_bytes(std::span<const uint8_t> data) {
    IoVec iov(const_cast<uint8_t*>(data.data()), data.size());
    co_return co_await co_write(iov);
  }
};

// A Channel straight over a socket.
class PlainChannel final : public Channel {
 public:
  explicit PlainChannel(std::unique_ptr<Stream> stream) : stream_(std::move(stream)) {}
  Task<Result<void>> co_read_exact(std::span<uint8_t> buf) override {
    if (!stream_) co_return Error{EPIPE, "connection handed over"};
    co_return co_await stream_->co_read_exact(buf);
  }
  Task<Result<void>> co_write(const IoVec& iov) override {
    if (!stream_) co_return Error{EPIPE, "connection handed over"};
    co_return co_await stream_->co_write(iov);
  }
  bool can_splice() const override { return stream_ != nullptr; }
  Task<Result<void>> co_write_from_pipe(Pipe& pipe) override {
    if (!stream_) co_return Error{EPIPE, "connection handed over"};
    co_return co_await stream_->co_write_from_pipe(pipe);
  }
  void close() override {
    if (stream_) stream_->close();
  }
  void abort() override {
    if (stream_) stream_->abort();
  }
  bool closed() const override { return !stream_ || stream_->closed(); }
  // Hands the socket over (to a TLS channel after STARTTLS).
  std::unique_ptr<Stream> release() { return std::move(stream_); }

 private:
  std::unique_ptr<Stream> stream_;
};

}  // namespace strata::nbd
