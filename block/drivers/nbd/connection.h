// One NBD client connection in transmission phase: many requests in flight,
// request sends serialised, and a reader coroutine that matches replies to
// requests by cookie, in any order.
//
// Contract: co_request() sends one request and waits for its reply. Data of
// READ replies lands straight in the caller's buffer; every chunk is checked
// against its request (inside the requested range, exact lengths, known
// cookie, right magic, bounded sizes) before a byte is stored. A reply that
// breaks the protocol closes the connection: every request in flight fails
// with ENOTCONN (the driver decides between reconnecting and EIO). A server
// error reply fails only its request, with the server's errno.
// Thread rules: loop-thread only. The Connection must be shared (the reader
// holds a reference); co_close() sends DISC and waits for the reader.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "base/sync.h"
#include "block/core/types.h"
#include "block/drivers/nbd/handshake.h"

namespace strata::nbdc {

struct NbdRequest {
  uint16_t type = 0;
  uint16_t flags = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  const IoVec* data = nullptr;  // WRITE payload, or READ destination
  // BLOCK_STATUS answer: the first extent of the granted context.
  uint64_t extent_length = 0;
  uint64_t extent_flags = 0;
};

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(Loop& loop, Negotiated negotiated, std::function<void()> on_lost);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Starts the reader; call once after construction.
  void start();
  Task<Result<void>> co_request(NbdRequest& request);
  // Sends DISC when still connected, closes, and waits for the reader.
  Task<void> co_close();

  const ExportInfo& info() const { return info_; }
  bool lost() const { return lost_; }
  const std::string& lost_reason() const { return lost_reason_; }

 private:
  struct Pending;
  struct ChunkHeader;
  Task<void> co_reader();
  Task<Result<void>> co_read_reply();
  Task<Result<void>> co_simple_reply(uint64_t cookie, uint32_t error);
  Task<Result<void>> co_chunk(const ChunkHeader& h);
  Task<Result<void>> co_data_chunk(Pending& p, const ChunkHeader& h);
  Task<Result<void>> co_small_chunk(Pending& p, const ChunkHeader& h);
  Result<void> apply_hole(Pending& p, const std::vector<uint8_t>& payload);
  Result<void> apply_status(Pending& p, const std::vector<uint8_t>& payload, bool wide);
  Result<void> apply_error(Pending& p, const ChunkHeader& h, const std::vector<uint8_t>& payload);
  Pending* find(uint64_t cookie);
  void finish(Pending& p);
  void fail_connection(const std::string& reason);
  std::vector<uint8_t> encode_header(const NbdRequest& r, uint64_t cookie) const;

  Loop& loop_;
  std::unique_ptr<nbd::Channel> channel_;
  ExportInfo info_;
  std::function<void()> on_lost_;
  std::map<uint64_t, Pending*> pending_;
  uint64_t next_cookie_ = 1;
  bool lost_ = false;
  bool closing_ = false;
  std::string lost_reason_;
  CoEvent reader_done_;
};

}  // namespace strata::nbdc
