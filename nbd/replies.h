// Encoding of transmission replies in the three forms a client can have
// negotiated: simple replies, structured reply chunks, and extended-header
// chunks.
//
// Contract: a Message accumulates the bytes of one or more replies (headers
// it owns, payloads it may only reference) to be written with one
// Channel::co_write(), so replies never interleave on the wire. Referenced
// payload buffers must outlive the write.
// Thread rules: none; plain values.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "nbd/extents.h"
#include "nbd/protocol.h"
#include "strata/iovec.h"

namespace strata::nbd {

enum class ReplyMode { kSimple, kStructured, kExtended };

// One part of a READ reply: data, or a hole (structured replies only).
struct ReadPiece {
  uint64_t offset, length;
  bool hole;
};

class Message {
 public:
  Message() = default;
  Message(const Message&) = delete;
  Message& operator=(const Message&) = delete;
  // Copies `bytes` into storage owned by the message.
  void add_owned(std::vector<uint8_t> bytes);
  // References caller-owned data.
  void add_ref(const IoVec& data) { iov_.append(data); }
  void clear() {
    owned_.clear();
    iov_ = IoVec();
  }
  const IoVec& iov() const { return iov_; }
  size_t size() const { return iov_.size(); }

 private:
  std::deque<std::vector<uint8_t>> owned_;
  IoVec iov_;
};

// Builds the replies to one request.
class ReplyEncoder {
 public:
  ReplyEncoder(ReplyMode mode, uint64_t cookie, uint64_t request_offset)
      : mode_(mode), cookie_(cookie), offset_(request_offset) {}
  ReplyMode mode() const { return mode_; }

  // Simple reply (ReplyMode::kSimple only); READ data follows via add_ref.
  void simple(Message& m, uint32_t error) const;
  // A successful reply with no payload in the right form for the mode.
  void success(Message& m) const;
  // An error in the right form for the mode (structured: an ERROR chunk
  // with a message, marked done).
  void error(Message& m, uint32_t error, const std::string& message) const;
  void none_chunk(Message& m) const;
  void data_chunk(Message& m, uint64_t offset, const IoVec& data, bool done) const;
  // The header of an OFFSET_DATA chunk whose `length` bytes of data the
  // caller sends after it.
  void data_chunk_header(Message& m, uint64_t offset, uint64_t length, bool done) const;
  void hole_chunk(Message& m, uint64_t offset, uint32_t length, bool done) const;
  // The header that precedes the piece of a READ reply: the simple reply
  // header (one data piece), an OFFSET_DATA chunk header or a hole chunk.
  void piece_header(Message& m, const ReadPiece& p, bool done) const;
  void status_chunk(Message& m, uint32_t context_id, const std::vector<Extent>& extents,
                    bool done) const;

 private:
  void chunk_header(Writer& w, uint16_t flags, uint16_t type, uint64_t length) const;
  ReplyMode mode_;
  uint64_t cookie_;
  uint64_t offset_;
};

}  // namespace strata::nbd
