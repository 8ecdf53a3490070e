#include "nbd/connection.h"

#include <algorithm>

namespace strata::nbd {

namespace {
// A rejected WRITE payload up to this size is read and dropped (the client
// gets EINVAL); larger ones look like a denial of service: disconnect.
constexpr uint64_t kMaxSkippedPayload = 2ull * kMaxPayload;
constexpr size_t kSkipChunk = 64 * 1024;
// How often the handshake watchdog looks at the clock; it bounds how long a
// finished connection waits for its watchdog to notice.
constexpr uint64_t kWatchdogTickMs = 50;
// Payload and READ buffers a connection keeps for reuse: enough for
// nbdcopy's 64 requests of 256 KiB in flight.
constexpr size_t kCachedBufferBytes = 16u << 20;
// Pipes for zero-copy READ replies: each holds one reply of up to about
// 1 MiB (fs.pipe-max-size, the most an unprivileged process may ask for),
// and a few ready replies keep the socket busy while the client reads.
constexpr size_t kMaxPipes = 4;
constexpr size_t kPipeBytes = 1u << 20;
}  // namespace

Connection::Connection(Loop& loop, HandshakeHost& host, std::unique_ptr<Channel> channel,
                       ConnectionLimits limits, std::string peer)
    : loop_(loop),
      host_(host),
      channel_(std::move(channel)),
      limits_(limits),
      peer_(std::move(peer)),
      buffers_(kCachedBufferBytes),
      pipes_(loop, kMaxPipes, kPipeBytes),
      requests_(loop),
      budget_(loop) {}

Connection::~Connection() {
  if (registered_ && session_.exp) session_.exp->detach_client(this);
}

void Connection::disconnect() {
  if (channel_) channel_->close();
}

ReplyMode Connection::mode() const {
  if (session_.extended) return ReplyMode::kExtended;
  return session_.structured ? ReplyMode::kStructured : ReplyMode::kSimple;
}

Task<void> Connection::co_handshake_watchdog() {
  uint64_t deadline = Loop::now_ns() + limits_.handshake_ms * 1'000'000;
  // Past the deadline keep closing: during STARTTLS the channel is being
  // replaced, and the new one must be closed too.
  while (!handshake_over_) {
    if (Loop::now_ns() >= deadline && channel_) channel_->close();
    co_await loop_.co_sleep(kWatchdogTickMs);
  }
}

Task<void> Connection::co_run() {
  if (limits_.handshake_ms > 0) requests_.spawn(co_handshake_watchdog());
  Handshake handshake(host_, channel_, this);
  auto negotiated = co_await handshake.co_run();
  handshake_over_ = true;
  if (negotiated && negotiated->has_value()) {
    session_ = **negotiated;
    registered_ = true;
    (void)co_await co_transmission();
  }
  channel_->close();
  co_await requests_.co_join();
  if (registered_) {
    session_.exp->detach_client(this);
    registered_ = false;
  }
}

Task<Result<void>> Connection::co_transmission() {
  for (;;) {
    auto more = co_await co_next_request();
    if (!more) {
      channel_->close();
      co_return std::move(more).error();
    }
    if (!*more) break;
  }
  // DISC: finish what is in flight, then close.
  co_await requests_.co_join();
  co_return Result<void>{};
}

Task<Result<void>> Connection::co_skip_payload(uint64_t length) {
  std::vector<uint8_t> sink(std::min<uint64_t>(length, kSkipChunk));
  while (length > 0) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(length, sink.size()));
    STRATA_CO_TRY(co_await channel_->co_read_exact({sink.data(), n}));
    length -= n;
  }
  co_return Result<void>{};
}

Task<Result<bool>> Connection::co_next_request() {
  uint8_t raw[kExtendedRequestSize];
  size_t header_size = request_header_size(session_.extended);
  STRATA_CO_TRY(co_await channel_->co_read_exact({raw, header_size}));
  auto req = parse_request({raw, header_size}, session_.extended);
  if (!req) co_return std::move(req).error();
  if (req->type == kCmdDisc) co_return false;
  bool has_payload =
      session_.extended ? (req->flags & kCmdFlagPayloadLen) != 0 : req->type == kCmdWrite;
  uint64_t payload_len = has_payload ? req->length : 0;
  if (payload_len > kMaxPayload) {
    if (payload_len > kMaxSkippedPayload) co_return Error{EPROTO, "request payload too large"};
    STRATA_CO_TRY(co_await co_skip_payload(payload_len));
    payload_len = 0;
    req->payload_dropped = true;
  }
  size_t cost = static_cast<size_t>(payload_len);
  if (req->type == kCmdRead && req->length <= kMaxPayload) cost = static_cast<size_t>(req->length);
  while (in_flight_ >= limits_.max_requests ||
         (in_flight_ > 0 && bytes_in_flight_ + cost > limits_.max_bytes)) {
    co_await budget_.wait();
  }
  if (channel_->closed()) co_return Error{ECONNRESET, "connection closed"};
  in_flight_++;
  bytes_in_flight_ += cost;
  AlignedBuffer payload = buffers_.take(static_cast<size_t>(payload_len));
  if (payload_len > 0) {
    auto r = co_await channel_->co_read_exact({payload.data(), static_cast<size_t>(payload_len)});
    if (!r) {
      release_budget(cost);
      buffers_.give(std::move(payload));
      co_return std::move(r).error();
    }
  }
  requests_.spawn(co_process(*req, std::move(payload), cost));
  co_return true;
}

void Connection::release_budget(size_t cost) {
  in_flight_--;
  bytes_in_flight_ -= cost;
  budget_.wake_all();
}

Task<void> Connection::co_process(Request req, AlignedBuffer payload, size_t cost) {
  Reply reply;
  ReplyEncoder enc(mode(), req.cookie, req.offset);
  size_t payload_len = payload.size() == 0 ? 0 : static_cast<size_t>(req.length);
  co_await co_dispatch(req, {payload.data(), payload_len}, enc, reply);
  buffers_.give(std::move(payload));
  co_await co_send(reply);
  buffers_.give(std::move(reply.data));
  reply.pipe.reset();
  release_budget(cost);
}

Task<void> Connection::co_send(Reply& reply) {
  if (channel_->closed()) co_return;
  Result<void> r;
  if (reply.pipe) {
    r = co_await channel_->co_write_from_pipe(*reply.pipe);
  } else if (reply.message.size() > 0) {
    r = co_await channel_->co_write(reply.message.iov());
  }
  if (!r) channel_->close();
}

}  // namespace strata::nbd
