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
// Pipes for zero-copy READ replies: each holds one reply of up to about
// 1 MiB (fs.pipe-max-size, the most an unprivileged process may ask for),
// and a few ready replies keep the socket busy while the client reads.
constexpr size_t kMaxPipes = 4;
constexpr size_t kPipeBytes = 1u << 20;
}  // namespace

Connection::Connection(Loop& loop, HandshakeHost& host, std::unique_ptr<Channel> channel,
                       ConnectionLimits limits, std::string peer, SharedResources& shared)
    : loop_(loop),
      host_(host),
      channel_(std::move(channel)),
      limits_(limits),
      peer_(std::move(peer)),
      shared_(shared),
      buffers_(shared.buffers),
      pipes_(loop, kMaxPipes, kPipeBytes),
      requests_(loop),
      budget_(loop),
      write_turn_(loop) {}

Connection::~Connection() {
  if (registered_ && session_.exp) session_.exp->detach_client(this);
}

void Connection::disconnect() {
  if (channel_) channel_->abort();
  shared_.budget.cancel(account_);
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

Task<std::optional<size_t>> Connection::co_admit(size_t cost) {
  while (in_flight_ >= limits_.max_requests ||
         (in_flight_ > 0 && bytes_in_flight_ + cost > limits_.max_bytes)) {
    co_await budget_.wait();
  }
  if (channel_->closed()) co_return std::nullopt;
  size_t granted = cost;
  if (cost > 0 && !shared_.budget.try_acquire(account_, cost)) {
    granted = co_await shared_.budget.co_acquire(account_, cost);
    if (granted == 0) co_return std::nullopt;  // cancelled: disconnected
    if (channel_->closed()) {
      shared_.budget.release(account_, granted);
      co_return std::nullopt;
    }
  }
  in_flight_++;
  bytes_in_flight_ += granted;
  co_return granted;
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
  auto admitted = co_await co_admit(cost);
  if (!admitted) co_return Error{ECONNRESET, "connection closed"};
  size_t held = *admitted;
  if (payload_len > held && req->type != kCmdWrite) {
    // Only a WRITE payload can be taken in pieces; another this long (a
    // block status payload is a few bytes) is dropped and refused.
    auto skipped = co_await co_skip_payload(payload_len);
    if (!skipped) {
      finish_request(held);
      co_return std::move(skipped).error();
    }
    payload_len = 0;
    req->payload_dropped = true;
  }
  if (payload_len > held) {
    auto r = co_await co_write_in_pieces(*req, payload_len, held);
    give_back(held);
    if (!r) {
      finish_request(0);
      co_return std::move(r).error();
    }
    co_return true;
  }
  AlignedBuffer payload = buffers_.take(static_cast<size_t>(payload_len));
  if (payload_len > 0) {
    auto r = co_await channel_->co_read_exact({payload.data(), static_cast<size_t>(payload_len)});
    if (!r) {
      buffers_.give(std::move(payload));
      finish_request(held);
      co_return std::move(r).error();
    }
  }
  requests_.spawn(co_process(*req, std::move(payload), held));
  co_return true;
}

// Bytes a request no longer needs (its request slot stays taken).
void Connection::give_back(size_t bytes) {
  if (bytes == 0) return;
  bytes_in_flight_ -= bytes;
  shared_.budget.release(account_, bytes);
  budget_.wake_all();
}

void Connection::finish_request(size_t bytes) {
  give_back(bytes);
  in_flight_--;
  budget_.wake_all();
}

Task<void> Connection::co_process(Request req, AlignedBuffer payload, size_t held) {
  Reply reply;
  // A READ granted less than its length is read and sent in pieces.
  reply.in_pieces = req.type == kCmdRead && held > 0 && held < req.length;
  ReplyEncoder enc(mode(), req.cookie, req.offset);
  size_t payload_len = payload.size() == 0 ? 0 : static_cast<size_t>(req.length);
  co_await co_dispatch(req, {payload.data(), payload_len}, enc, reply);
  buffers_.give(std::move(payload));
  if (req.type != kCmdRead) {
    give_back(held);  // the payload is in the image
    held = 0;
  }
  if (!reply.pieces.empty()) {
    co_await co_send_in_pieces(req, enc, reply, held);
  } else {
    co_await co_send(reply);
  }
  buffers_.give(std::move(reply.data));
  reply.pipe.reset();
  finish_request(held);
}

Task<void> Connection::co_send(Reply& reply) {
  while (writing_in_pieces_) co_await write_turn_.wait();
  if (channel_->closed()) co_return;
  Result<void> r;
  if (reply.pipe) {
    r = co_await channel_->co_write_from_pipe(*reply.pipe);
  } else if (reply.message.size() > 0) {
    r = co_await co_write_batched(reply.message.iov());
  }
  if (!r) channel_->close();
}

struct Connection::SendBatch {
  explicit SendBatch(Loop& loop) : written(loop) {}
  IoVec iov;
  CoEvent written;
  Result<void> result;
};

Task<Result<void>> Connection::co_write_batched(const IoVec& iov) {
  if (std::shared_ptr<SendBatch> joined = batch_) {
    joined->iov.append(iov);
    co_await joined->written.co_wait();
    co_return joined->result;
  }
  auto batch = std::make_shared<SendBatch>(loop_);
  batch_ = batch;
  batch->iov.append(iov);
  co_await loop_.co_yield_now();  // the rest of this loop turn joins
  while (writing_in_pieces_) co_await write_turn_.wait();
  batch_.reset();
  if (channel_->closed()) {
    batch->result = Error{EPIPE, "connection closed"};
  } else {
    batch->result = co_await channel_->co_write(batch->iov);
  }
  batch->written.set();
  co_return batch->result;
}

Task<void> Connection::co_take_write_turn() {
  while (writing_in_pieces_) co_await write_turn_.wait();
  writing_in_pieces_ = true;
}

void Connection::give_write_turn() {
  writing_in_pieces_ = false;
  write_turn_.wake_all();
}

}  // namespace strata::nbd
