// Connection: one NBD client, from the greeting to the disconnect.
//
// Contract: co_run() negotiates (Handshake), then reads requests in order
// and processes them concurrently; each reply is written whole as soon as
// its request completes, so replies may come out of order as the protocol
// allows. At most `max_requests` requests and `max_bytes` of request and
// reply buffers are in flight per client, and all clients of a server share
// a MemoryBudget (nbd/budget.h): past any of these bounds the connection
// stops reading (the kernel's socket buffer then pushes back) until bytes
// come back. When the shared budget grants a client that holds nothing only
// a floor, a READ or WRITE longer than that is done in pieces of the floor:
// the READ reply is read and written piece by piece (structured replies as
// several data chunks) while no other reply of the client is written; the
// WRITE payload is read and written to the image piece by piece. So no
// client waits forever on clients that do not read. A WRITE's bytes go back
// once the image has them; a READ's once its reply is with the kernel. A
// protocol violation that desynchronises the stream (bad magic, oversized
// payload) drops the connection; everything else gets an error reply. DISC
// finishes the requests in flight, then closes. disconnect() closes at once;
// co_run() still waits for the requests in flight before it returns. A
// client still negotiating after `handshake_ms` is dropped.
// Thread rules: loop-thread only.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/sync.h"
#include "nbd/budget.h"
#include "nbd/buffer_pool.h"
#include "nbd/channel.h"
#include "nbd/handshake.h"
#include "nbd/pipe_pool.h"
#include "nbd/replies.h"
#include "nbd/wire.h"

namespace strata::nbd {

struct ConnectionLimits {
  size_t max_requests = 64;
  size_t max_bytes = 128u << 20;
  // A client that has not finished negotiating after this long is dropped
  // (qemu-nbd's handshake-max-seconds); 0: no limit.
  uint64_t handshake_ms = 10'000;
};

// What the connections of one server share: the memory budget and the pool
// of payload and READ buffers (idle buffers kept for reuse are bounded by
// `cached_bytes` for the whole server, not per client).
struct SharedResources {
  SharedResources(Loop& loop, size_t budget_bytes, size_t floor_bytes, size_t cached_bytes)
      : budget(loop, budget_bytes, floor_bytes), buffers(cached_bytes) {}
  MemoryBudget budget;
  BufferPool buffers;
};

class Connection final : public ExportClient {
 public:
  Connection(Loop& loop, HandshakeHost& host, std::unique_ptr<Channel> channel,
             ConnectionLimits limits, std::string peer, SharedResources& shared);
  ~Connection() override;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  Task<void> co_run();
  void disconnect() override;
  const std::string& peer() const { return peer_; }
  Export* current_export() const { return session_.exp; }

 private:
  struct Outcome {
    uint32_t error = 0;
    std::string message;
  };
  // The reply to one request: in `message` (headers, and READ data in
  // `data`), built whole in `pipe` (a zero-copy READ reply), or, for a READ
  // done in pieces, planned in `pieces` and produced as it is written.
  struct Reply {
    Message message;
    AlignedBuffer data;
    PipePool::Lease pipe;
    bool in_pieces = false;
    std::vector<ReadPiece> pieces;
  };

  Task<Result<void>> co_transmission();
  // Drops the connection if the handshake outlives limits_.handshake_ms.
  Task<void> co_handshake_watchdog();
  // False once the client sent DISC.
  Task<Result<bool>> co_next_request();
  Task<Result<void>> co_skip_payload(uint64_t length);
  // Waits for a request slot and `cost` bytes; returns the bytes granted
  // (fewer than `cost`: do the request in pieces of that size), nothing for
  // a connection that closed meanwhile.
  Task<std::optional<size_t>> co_admit(size_t cost);
  Task<void> co_process(Request req, AlignedBuffer payload, size_t held);
  Task<void> co_send(Reply& reply);
  void give_back(size_t bytes);
  void finish_request(size_t bytes);
  ReplyMode mode() const;
  // The NBD error for a failed command (ENOTSUP only for FAST_ZERO).
  Outcome outcome_of(const Request& req, const Result<void>& r) const;
  void encode_result(const Request& req, const Result<void>& r, ReplyEncoder& enc,
                     Message& m) const;

  // Requests done in pieces of `piece` bytes (nbd/pieces.cc).
  Task<Result<void>> co_write_in_pieces(Request req, uint64_t length, size_t piece);
  Task<void> co_reply_written(Request req, Outcome result);
  Task<void> co_send_in_pieces(const Request& req, const ReplyEncoder& enc, Reply& reply,
                               size_t piece);
  Task<Result<void>> co_read_piece_by_piece(const Request& req, const ReplyEncoder& enc,
                                            const std::vector<ReadPiece>& pieces,
                                            AlignedBuffer& buf, size_t piece);
  // While a reply is written in pieces no other reply of this client is.
  Task<void> co_take_write_turn();
  void give_write_turn();
  // Writes a whole reply. The replies that finish in one loop turn (say,
  // the reads one io_uring completion batch resumes) leave in one write:
  // the first becomes the batch's leader, lets the loop turn finish, then
  // writes everything that joined. NBD replies may go in any order.
  struct SendBatch;
  Task<Result<void>> co_write_batched(const IoVec& iov);

  // Validation and the commands (nbd/commands.cc).
  Outcome check_request(const Request& req) const;
  // `payload` holds the request's payload bytes (empty when it has none).
  Task<void> co_dispatch(const Request& req, std::span<const uint8_t> payload, ReplyEncoder& enc,
                         Reply& reply);

  // READ (nbd/read.cc): the reply's pieces, then the reply built in a pipe
  // when the channel and the export can splice, else copied through memory.
  Task<void> co_read(const Request& req, ReplyEncoder& enc, Reply& reply);
  Task<Result<void>> co_read_pieces(const Request& req, const ReplyEncoder& enc, Reply& reply);
  Task<Result<std::vector<ReadPiece>>> co_plan_read(const Request& req, const ReplyEncoder& enc);
  bool may_splice(const Request& req) const;
  Task<Result<void>> co_read_into_pipe(const std::vector<ReadPiece>& pieces,
                                       const ReplyEncoder& enc, Pipe& pipe);
  Task<Result<void>> co_read_into_memory(const Request& req, const std::vector<ReadPiece>& pieces,
                                         const ReplyEncoder& enc, Reply& reply);
  Task<Result<void>> co_block_status(const Request& req, std::span<const uint8_t> payload,
                                     Message& m, ReplyEncoder& enc);
  Task<Result<void>> co_simple_command(const Request& req, std::span<const uint8_t> payload);

  Loop& loop_;
  HandshakeHost& host_;
  std::unique_ptr<Channel> channel_;
  ConnectionLimits limits_;
  std::string peer_;
  Session session_;
  SharedResources& shared_;
  BufferPool& buffers_;
  MemoryBudget::Account account_;
  PipePool pipes_;
  TaskGroup requests_;
  CoQueue budget_;
  CoQueue write_turn_;
  bool writing_in_pieces_ = false;
  std::shared_ptr<SendBatch> batch_;  // collecting replies for its leader
  size_t in_flight_ = 0;
  size_t bytes_in_flight_ = 0;
  bool registered_ = false;
  bool handshake_over_ = false;
};

}  // namespace strata::nbd
