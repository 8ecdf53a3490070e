// Transmission commands of a Connection: validation as the spec and QEMU do
// it, then WRITE, FLUSH, TRIM, CACHE, WRITE_ZEROES and BLOCK_STATUS (READ is
// in nbd/read.cc).
#include <algorithm>

#include "nbd/connection.h"

namespace strata::nbd {

namespace {
uint16_t allowed_flags(uint16_t type, const Session& s) {
  uint16_t flags = kCmdFlagFua;
  switch (type) {
    case kCmdRead:
      if (s.structured) flags |= kCmdFlagDf;
      break;
    case kCmdWrite:
      if (s.extended) flags |= kCmdFlagPayloadLen;
      break;
    case kCmdWriteZeroes:
      flags |= kCmdFlagNoHole | kCmdFlagFastZero;
      break;
    case kCmdBlockStatus:
      flags |= kCmdFlagReqOne;
      if (s.extended) flags |= kCmdFlagPayloadLen;
      break;
    default:
      break;
  }
  return flags;
}

bool is_write(uint16_t type) {
  return type == kCmdWrite || type == kCmdTrim || type == kCmdWriteZeroes;
}

std::string range_text(const Request& req) {
  return "offset " + std::to_string(req.offset) + " length " + std::to_string(req.length);
}
}  // namespace

Connection::Outcome Connection::check_request(const Request& req) const {
  const Export& exp = *session_.exp;
  if (req.payload_dropped) {
    return {kEinval, "payload of " + std::to_string(req.length) + " bytes exceeds the maximum of " +
                         std::to_string(kMaxPayload)};
  }
  if (req.type > kCmdBlockStatus) {
    return {kEinval, "unsupported command " + std::to_string(req.type)};
  }
  if (req.flags & ~allowed_flags(req.type, session_)) {
    return {kEinval,
            "unsupported flags " + std::to_string(req.flags) + " for " + command_name(req.type)};
  }
  if (session_.extended && req.type == kCmdWrite && !(req.flags & kCmdFlagPayloadLen)) {
    return {kEinval, "NBD_CMD_WRITE without a payload length"};
  }
  if (req.type == kCmdFlush) return {};
  bool data = req.type == kCmdRead || req.type == kCmdWrite || req.type == kCmdCache;
  if (data && req.length > kMaxPayload) {
    uint32_t err = (req.type == kCmdRead && session_.structured) ? kEoverflow : kEinval;
    return {err, std::string(command_name(req.type)) + " of " + std::to_string(req.length) +
                     " bytes exceeds the maximum of " + std::to_string(kMaxPayload)};
  }
  if (is_write(req.type) && !exp.writable()) return {kEperm, "export is read-only"};
  // An extended BLOCK_STATUS payload carries the effect length; checked later.
  bool status_payload = req.type == kCmdBlockStatus && (req.flags & kCmdFlagPayloadLen);
  uint64_t size = exp.size();
  if (!status_payload && (req.offset > size || req.length > size - req.offset)) {
    bool nospc = req.type == kCmdWrite || req.type == kCmdWriteZeroes;
    return {nospc ? kEnospc : kEinval, "request past the end of the export: " + range_text(req)};
  }
  uint32_t align = session_.block_size_requested ? exp.min_block_size() : 1;
  if (align > 1 && (req.offset % align || (!status_payload && req.length % align))) {
    return {kEinval, "request not aligned to " + std::to_string(align) + ": " + range_text(req)};
  }
  if (req.type == kCmdBlockStatus) {
    if (session_.contexts.empty()) return {kEinval, "no meta context was negotiated"};
    if (req.length == 0 && !status_payload) return {kEinval, "block status of zero length"};
  }
  return {};
}

Task<void> Connection::co_dispatch(const Request& req, std::span<const uint8_t> payload,
                                   ReplyEncoder& enc, Reply& reply) {
  Message& m = reply.message;
  Outcome bad = check_request(req);
  if (bad.error) {
    enc.error(m, bad.error, bad.message);
    co_return;
  }
  Result<void> r;
  if (req.type == kCmdRead) {
    co_await co_read(req, enc, reply);
    co_return;
  }
  if (req.type == kCmdBlockStatus) {
    r = co_await co_block_status(req, payload, m, enc);
    if (!r) encode_result(req, r, enc, m);
  } else {
    r = co_await co_simple_command(req, payload);
    encode_result(req, r, enc, m);
  }
}

Connection::Outcome Connection::outcome_of(const Request& req, const Result<void>& r) const {
  if (r) return {};
  uint32_t err = errno_to_nbd(r.error().code);
  // ENOTSUP is only for FAST_ZERO.
  if (err == kEnotsup && !(req.flags & kCmdFlagFastZero)) err = kEio;
  return {err, r.error().message};
}

void Connection::encode_result(const Request& req, const Result<void>& r, ReplyEncoder& enc,
                               Message& m) const {
  Outcome o = outcome_of(req, r);
  if (o.error) {
    enc.error(m, o.error, o.message);
  } else {
    enc.success(m);
  }
}

Task<Result<void>> Connection::co_simple_command(const Request& req,
                                                 std::span<const uint8_t> payload) {
  Child* root = session_.exp->root();
  bool fua = (req.flags & kCmdFlagFua) || session_.exp->options().writethrough;
  switch (req.type) {
    case kCmdWrite: {
      if (payload.empty()) co_return Result<void>{};
      IoVec data(const_cast<uint8_t*>(payload.data()), payload.size());
      co_return co_await root->co_pwritev(req.offset, data, fua ? uint32_t{kReqFua} : 0u);
    }
    case kCmdFlush:
      co_return co_await root->co_flush();
    case kCmdTrim: {
      session_.exp->forget_data();
      STRATA_CO_TRY(co_await root->co_pdiscard(req.offset, req.length));
      if (fua) co_return co_await root->co_flush();
      co_return Result<void>{};
    }
    case kCmdWriteZeroes: {
      session_.exp->forget_data();
      uint32_t flags = (req.flags & kCmdFlagNoHole) ? 0u : uint32_t{kReqMayUnmap};
      if (fua) flags |= kReqFua;
      if (req.flags & kCmdFlagFastZero) flags |= kReqNoFallback;
      co_return co_await root->co_pwrite_zeroes(req.offset, req.length, flags);
    }
    case kCmdCache:
      // A prefetch hint with no effect on the data: nothing to do.
      co_return Result<void>{};
    default:
      co_return Error{EINVAL, "unsupported command"};
  }
}

Task<Result<void>> Connection::co_block_status(const Request& req, std::span<const uint8_t> payload,
                                               Message& m, ReplyEncoder& enc) {
  std::vector<MetaContext> selected = session_.contexts;
  uint64_t length = req.length;
  if (req.flags & kCmdFlagPayloadLen) {
    auto p = parse_block_status_payload(payload);
    if (!p) co_return std::move(p).error();
    selected.clear();
    for (uint32_t id : p->ids) {
      auto it = std::find_if(session_.contexts.begin(), session_.contexts.end(),
                             [id](const MetaContext& c) { return c.id == id; });
      if (it == session_.contexts.end()) {
        co_return Error{EINVAL, "context id " + std::to_string(id) + " was not negotiated"};
      }
      selected.push_back(*it);
    }
    uint64_t size = session_.exp->size();
    if (req.offset >= size) co_return Error{EINVAL, "block status past the end of the export"};
    length = std::min(p->effect_length, size - req.offset);
    if (length == 0) co_return Error{EINVAL, "block status of zero length"};
  }
  size_t max_extents = (req.flags & kCmdFlagReqOne) ? 1 : kMaxExtentsPerReply;
  Child* root = session_.exp->root();
  for (size_t i = 0; i < selected.size(); i++) {
    const MetaContext& ctx = selected[i];
    std::vector<Extent> extents;
    if (ctx.kind == ContextKind::kDirtyBitmap) {
      extents =
          bitmap_extents(session_.exp->bitmap(ctx.bitmap_index), req.offset, length, max_extents);
    } else {
      ExtentKind kind =
          ctx.kind == ContextKind::kBaseAllocation ? ExtentKind::kAllocation : ExtentKind::kDepth;
      auto r = co_await co_status_extents(root, kind, req.offset, length, max_extents);
      if (!r) co_return std::move(r).error();
      extents = std::move(*r);
    }
    if (extents.empty()) co_return Error{EIO, "block status returned no extent"};
    enc.status_chunk(m, ctx.id, extents, i + 1 == selected.size());
  }
  co_return Result<void>{};
}

}  // namespace strata::nbd
