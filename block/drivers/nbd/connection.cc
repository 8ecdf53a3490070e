#include "block/drivers/nbd/connection.h"

#include <array>

#include "base/log.h"
#include "nbd/protocol.h"
#include "nbd/wire.h"

namespace strata::nbdc {

using namespace strata::nbd;

namespace {
// Largest payload of a chunk that is not read data: an error message, or
// block status descriptors (as many as a server may send in one reply).
constexpr uint64_t kMaxSmallChunk = 8 + 16ull * kMaxExtentsPerReply;

int nbd_to_errno(uint32_t e) {
  switch (e) {
    case kEperm:
      return EPERM;
    case kEio:
      return EIO;
    case kEnomem:
      return ENOMEM;
    case kEinval:
      return EINVAL;
    case kEnospc:
      return ENOSPC;
    case kEoverflow:
      return EOVERFLOW;
    case kEnotsup:
      return ENOTSUP;
    case kEshutdown:
      return ESHUTDOWN;
    default:
      return EIO;
  }
}

Error protocol(const std::string& what) {
  return Error{EPROTO, what};
}
}  // namespace

struct Connection::Pending {
  explicit Pending(Loop& loop, NbdRequest& r) : request(r), done(loop) {}
  NbdRequest& request;
  CoEvent done;
  Result<void> result;
  uint64_t data_bytes = 0;  // READ: bytes delivered by data and hole chunks
  bool got_error = false;
  bool got_status = false;
};

struct Connection::ChunkHeader {
  uint16_t flags = 0;
  uint16_t type = 0;
  uint64_t cookie = 0;
  uint64_t length = 0;
};

Connection::Connection(Loop& loop, Negotiated negotiated, std::function<void()> on_lost)
    : loop_(loop),
      channel_(std::move(negotiated.channel)),
      info_(negotiated.info),
      on_lost_(std::move(on_lost)),
      reader_done_(loop) {}

Connection::~Connection() = default;

void Connection::start() {
  auto self = shared_from_this();
  loop_.spawn([](std::shared_ptr<Connection> c) -> Task<void> { co_await c->co_reader(); }(self));
}

std::vector<uint8_t> Connection::encode_header(const NbdRequest& r, uint64_t cookie) const {
  Writer w;
  if (info_.extended) {
    // With extended headers a write says that its length is a payload.
    uint16_t flags = r.flags | (r.type == kCmdWrite ? kCmdFlagPayloadLen : 0);
    w.u32(kExtendedRequestMagic).u16(flags).u16(r.type).u64(cookie).u64(r.offset).u64(r.length);
  } else {
    w.u32(kRequestMagic).u16(r.flags).u16(r.type).u64(cookie).u64(r.offset);
    w.u32(static_cast<uint32_t>(r.length));
  }
  return std::move(w.bytes());
}

Task<Result<void>> Connection::co_request(NbdRequest& request) {
  if (lost_) co_return Error{ENOTCONN, "NBD connection lost: " + lost_reason_};
  uint64_t cookie = next_cookie_++;
  Pending p(loop_, request);
  pending_[cookie] = &p;
  std::vector<uint8_t> header = encode_header(request, cookie);
  IoVec message(header.data(), header.size());
  if (request.type == kCmdWrite && request.data) message.append(*request.data);
  auto sent = co_await channel_->co_write(message);
  if (!sent) fail_connection("send failed: " + sent.error().message);
  co_await p.done.co_wait();
  co_return std::move(p.result);
}

Connection::Pending* Connection::find(uint64_t cookie) {
  auto it = pending_.find(cookie);
  return it == pending_.end() ? nullptr : it->second;
}

void Connection::finish(Pending& p) {
  for (auto it = pending_.begin(); it != pending_.end(); ++it) {
    if (it->second == &p) {
      pending_.erase(it);
      break;
    }
  }
  p.done.set();
}

void Connection::fail_connection(const std::string& reason) {
  if (lost_) return;
  lost_ = true;
  lost_reason_ = reason;
  channel_->close();
  auto pending = std::move(pending_);
  pending_.clear();
  for (auto& [cookie, p] : pending) {
    p->result = Error{ENOTCONN, "NBD connection lost: " + reason};
    p->done.set();
  }
  if (!closing_ && on_lost_) on_lost_();
}

Task<void> Connection::co_reader() {
  while (!lost_) {
    auto r = co_await co_read_reply();
    if (!r) fail_connection(r.error().message);
  }
  reader_done_.set();
}

Task<Result<void>> Connection::co_read_reply() {
  std::array<uint8_t, kExtendedHeaderSize> buf{};
  STRATA_CO_TRY(co_await channel_->co_read_exact(std::span<uint8_t>(buf.data(), 4)));
  uint32_t magic = Reader(buf.data(), 4).u32();
  size_t size = magic == kSimpleReplyMagic       ? kSimpleReplySize
                : magic == kStructuredReplyMagic ? kStructuredHeaderSize
                : magic == kExtendedReplyMagic   ? kExtendedHeaderSize
                                                 : 0;
  bool allowed = info_.extended ? magic == kExtendedReplyMagic
                                : magic != kExtendedReplyMagic &&
                                      (magic == kSimpleReplyMagic || info_.structured);
  if (size == 0 || !allowed) co_return protocol("NBD server sent a reply with a bad magic");
  STRATA_CO_TRY(co_await channel_->co_read_exact(std::span<uint8_t>(buf.data() + 4, size - 4)));
  Reader r(buf.data() + 4, size - 4);
  if (magic == kSimpleReplyMagic) {
    uint32_t error = r.u32();
    uint64_t cookie = r.u64();
    co_return co_await co_simple_reply(cookie, error);
  }
  ChunkHeader h;
  h.flags = r.u16();
  h.type = r.u16();
  h.cookie = r.u64();
  if (magic == kExtendedReplyMagic) (void)r.u64();  // offset: checked per chunk type
  h.length = magic == kExtendedReplyMagic ? r.u64() : r.u32();
  co_return co_await co_chunk(h);
}

Task<Result<void>> Connection::co_simple_reply(uint64_t cookie, uint32_t error) {
  Pending* p = find(cookie);
  if (!p) co_return protocol("NBD server replied to an unknown cookie");
  NbdRequest& req = p->request;
  if (error) {
    p->result = Error{nbd_to_errno(error), "NBD server reported an error"};
  } else if (req.type == kCmdRead) {
    if (info_.structured) co_return protocol("NBD server sent a simple reply to a read");
    IoVec dest = req.data->slice(0, req.length);
    for (const auto& v : dest.entries()) {
      STRATA_CO_TRY(
          co_await channel_->co_read_exact({static_cast<uint8_t*>(v.iov_base), v.iov_len}));
    }
    if (lost_ || find(cookie) != p) co_return protocol("NBD connection closed during a reply");
  } else if (req.type == kCmdBlockStatus) {
    co_return protocol("NBD server sent a simple reply to block status");
  }
  finish(*p);
  co_return Result<void>{};
}

Task<Result<void>> Connection::co_chunk(const ChunkHeader& h) {
  Pending* p = find(h.cookie);
  if (!p) co_return protocol("NBD server replied to an unknown cookie");
  if (h.type == kChunkOffsetData) {
    STRATA_CO_TRY(co_await co_data_chunk(*p, h));
  } else if (h.type == kChunkNone) {
    if (h.length != 0 || !(h.flags & kReplyFlagDone)) {
      co_return protocol("NBD server sent a malformed final chunk");
    }
  } else {
    STRATA_CO_TRY(co_await co_small_chunk(*p, h));
  }
  if (lost_ || find(h.cookie) != p) co_return protocol("NBD connection closed during a reply");
  if (!(h.flags & kReplyFlagDone)) co_return Result<void>{};
  NbdRequest& req = p->request;
  if (!p->got_error) {
    if (req.type == kCmdRead && p->data_bytes != req.length) {
      co_return protocol("NBD server's read reply does not cover the request");
    }
    if (req.type == kCmdBlockStatus && !p->got_status) {
      co_return protocol("NBD server's block status reply has no extent");
    }
  }
  finish(*p);
  co_return Result<void>{};
}

Task<Result<void>> Connection::co_data_chunk(Pending& p, const ChunkHeader& h) {
  NbdRequest& req = p.request;
  if (req.type != kCmdRead)
    co_return protocol("NBD server sent data for a request that is no read");
  if (h.length <= 8 || h.length - 8 > req.length) {
    co_return protocol("NBD server sent a data chunk of a bad length");
  }
  std::array<uint8_t, 8> off_buf;
  STRATA_CO_TRY(co_await channel_->co_read_exact(off_buf));
  uint64_t offset = Reader(off_buf.data(), 8).u64();
  uint64_t len = h.length - 8;
  if (offset < req.offset || offset - req.offset > req.length - len) {
    co_return protocol("NBD server sent data outside the requested range");
  }
  IoVec dest = req.data->slice(offset - req.offset, len);
  for (const auto& v : dest.entries()) {
    STRATA_CO_TRY(co_await channel_->co_read_exact({static_cast<uint8_t*>(v.iov_base), v.iov_len}));
  }
  p.data_bytes += len;
  co_return Result<void>{};
}

Task<Result<void>> Connection::co_small_chunk(Pending& p, const ChunkHeader& h) {
  if (h.length > kMaxSmallChunk) co_return protocol("NBD server sent an oversized reply chunk");
  std::vector<uint8_t> payload(h.length);
  STRATA_CO_TRY(co_await channel_->co_read_exact(payload));
  switch (h.type) {
    case kChunkOffsetHole:
      co_return apply_hole(p, payload);
    case kChunkBlockStatus:
      co_return apply_status(p, payload, false);
    case kChunkBlockStatusExt:
      co_return apply_status(p, payload, true);
    default:
      break;
  }
  if (h.type & 0x8000) co_return apply_error(p, h, payload);
  co_return protocol("NBD server sent an unknown reply chunk type");
}

Result<void> Connection::apply_hole(Pending& p, const std::vector<uint8_t>& payload) {
  NbdRequest& req = p.request;
  if (req.type != kCmdRead || payload.size() != 12) {
    return protocol("NBD server sent a malformed hole chunk");
  }
  Reader r(payload);
  uint64_t offset = r.u64();
  uint64_t len = r.u32();
  if (len == 0 || offset < req.offset || len > req.length ||
      offset - req.offset > req.length - len) {
    return protocol("NBD server sent a hole outside the requested range");
  }
  req.data->fill(offset - req.offset, len, 0);
  p.data_bytes += len;
  return {};
}

Result<void> Connection::apply_status(Pending& p, const std::vector<uint8_t>& payload, bool wide) {
  NbdRequest& req = p.request;
  if (req.type != kCmdBlockStatus || wide != info_.extended || p.got_status) {
    return protocol("NBD server sent an unexpected block status chunk");
  }
  Reader r(payload);
  uint32_t id = r.u32();
  uint64_t count = wide ? r.u32() : (payload.size() >= 4 ? (payload.size() - 4) / 8 : 0);
  size_t descriptor = wide ? 16 : 8;
  if (id != info_.context_id || count == 0 ||
      payload.size() != (wide ? 8 : 4) + count * descriptor) {
    return protocol("NBD server sent a malformed block status chunk");
  }
  req.extent_length = wide ? r.u64() : r.u32();
  req.extent_flags = wide ? r.u64() : r.u32();
  if (req.extent_length == 0) return protocol("NBD server sent an empty extent");
  // With REQ_ONE a server may describe more than was asked; only the asked
  // range counts.
  req.extent_length = std::min(req.extent_length, req.length);
  p.got_status = true;
  return {};
}

Result<void> Connection::apply_error(Pending& p, const ChunkHeader& h,
                                     const std::vector<uint8_t>& payload) {
  Reader r(payload);
  uint32_t error = r.u32();
  uint16_t msg_len = r.u16();
  std::string message = r.str(msg_len);
  if (r.failed() || error == 0) return protocol("NBD server sent a malformed error chunk");
  if (h.type == kChunkErrorOffset) {
    uint64_t offset = r.u64();
    NbdRequest& req = p.request;
    if (r.failed() || offset < req.offset || offset - req.offset >= req.length) {
      return protocol("NBD server sent an error offset outside the request");
    }
  }
  if (!p.got_error) {
    std::string text = "NBD server reported an error";
    if (valid_string(message) && !message.empty()) text += ": " + message;
    p.result = Error{nbd_to_errno(error), text};
    p.got_error = true;
  }
  return {};
}

Task<void> Connection::co_close() {
  closing_ = true;
  if (!lost_) {
    NbdRequest disc;
    disc.type = kCmdDisc;
    std::vector<uint8_t> header = encode_header(disc, next_cookie_++);
    (void)co_await channel_->co_write_bytes(header);
    fail_connection("closed");
  }
  co_await reader_done_.co_wait();
}

}  // namespace strata::nbdc
