#include "nbd/replies.h"

#include <algorithm>

namespace strata::nbd {

void Message::add_owned(std::vector<uint8_t> bytes) {
  if (bytes.empty()) return;
  owned_.push_back(std::move(bytes));
  iov_.append(owned_.back().data(), owned_.back().size());
}

void ReplyEncoder::chunk_header(Writer& w, uint16_t flags, uint16_t type, uint64_t length) const {
  if (mode_ == ReplyMode::kExtended) {
    w.u32(kExtendedReplyMagic).u16(flags).u16(type).u64(cookie_).u64(offset_).u64(length);
  } else {
    w.u32(kStructuredReplyMagic)
        .u16(flags)
        .u16(type)
        .u64(cookie_)
        .u32(static_cast<uint32_t>(length));
  }
}

void ReplyEncoder::simple(Message& m, uint32_t error) const {
  Writer w;
  w.u32(kSimpleReplyMagic).u32(error).u64(cookie_);
  m.add_owned(std::move(w.bytes()));
}

void ReplyEncoder::none_chunk(Message& m) const {
  Writer w;
  chunk_header(w, kReplyFlagDone, kChunkNone, 0);
  m.add_owned(std::move(w.bytes()));
}

void ReplyEncoder::success(Message& m) const {
  // Structured mode may answer payload-less commands with a simple reply.
  if (mode_ == ReplyMode::kExtended) {
    none_chunk(m);
  } else {
    simple(m, 0);
  }
}

void ReplyEncoder::error(Message& m, uint32_t error, const std::string& message) const {
  if (mode_ == ReplyMode::kSimple) {
    simple(m, error);
    return;
  }
  std::string text = message.substr(0, kMaxStringSize);
  Writer w;
  chunk_header(w, kReplyFlagDone, kChunkError, 6 + text.size());
  w.u32(error).u16(static_cast<uint16_t>(text.size())).str(text);
  m.add_owned(std::move(w.bytes()));
}

void ReplyEncoder::data_chunk(Message& m, uint64_t offset, const IoVec& data, bool done) const {
  data_chunk_header(m, offset, data.size(), done);
  m.add_ref(data);
}

void ReplyEncoder::data_chunk_header(Message& m, uint64_t offset, uint64_t length,
                                     bool done) const {
  Writer w;
  chunk_header(w, done ? kReplyFlagDone : 0, kChunkOffsetData, 8 + length);
  w.u64(offset);
  m.add_owned(std::move(w.bytes()));
}

void ReplyEncoder::hole_chunk(Message& m, uint64_t offset, uint32_t length, bool done) const {
  Writer w;
  chunk_header(w, done ? kReplyFlagDone : 0, kChunkOffsetHole, 12);
  w.u64(offset).u32(length);
  m.add_owned(std::move(w.bytes()));
}

void ReplyEncoder::piece_header(Message& m, const ReadPiece& p, bool done) const {
  if (mode_ == ReplyMode::kSimple) {
    simple(m, 0);
  } else if (p.hole) {
    hole_chunk(m, p.offset, static_cast<uint32_t>(p.length), done);
  } else {
    data_chunk_header(m, p.offset, p.length, done);
  }
}

void ReplyEncoder::status_chunk(Message& m, uint32_t context_id, const std::vector<Extent>& extents,
                                bool done) const {
  Writer w;
  uint16_t flags = done ? kReplyFlagDone : 0;
  if (mode_ == ReplyMode::kExtended) {
    chunk_header(w, flags, kChunkBlockStatusExt, 8 + 16 * extents.size());
    w.u32(context_id).u32(static_cast<uint32_t>(extents.size()));
    for (const auto& e : extents) w.u64(e.length).u64(e.flags);
  } else {
    chunk_header(w, flags, kChunkBlockStatus, 4 + 8 * extents.size());
    w.u32(context_id);
    for (const auto& e : extents) w.u32(static_cast<uint32_t>(e.length)).u32(e.flags);
  }
  m.add_owned(std::move(w.bytes()));
}

}  // namespace strata::nbd
