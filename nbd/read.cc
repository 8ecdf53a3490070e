// READ replies of a Connection. A read is first planned as pieces (data and,
// for structured replies long enough to be worth a block-status lookup,
// holes). The reply is then built in a pipe when it can be: headers written
// into it and the data spliced from the image, so the data reaches the
// socket without being copied in this process. Otherwise, and whenever the
// export cannot splice or the pipe fills up, the data is read into memory.
#include <algorithm>

#include "nbd/connection.h"

namespace strata::nbd {

namespace {
// Structured reads at least this long are sent sparsely (OFFSET_HOLE chunks
// for zero ranges); shorter ones are not worth a block-status lookup.
constexpr uint64_t kSparseReadThreshold = 64 * 1024;
// Reads at least this long are spliced: below it the two extra system calls
// cost more than the copy they save.
constexpr uint64_t kSpliceReadThreshold = 64 * 1024;
// Pipe room kept for chunk headers and for data that does not start on a
// page boundary (a pipe holds whole pages; base/pipe.h).
constexpr uint64_t kPipeSlack = 64 * 1024;

}  // namespace

Task<void> Connection::co_read(const Request& req, ReplyEncoder& enc, Reply& reply) {
  if (req.length == 0) {
    if (enc.mode() == ReplyMode::kSimple) {
      enc.simple(reply.message, 0);
    } else {
      enc.none_chunk(reply.message);
    }
    co_return;
  }
  if (reply.in_pieces) {
    // Planned now, read and written piece by piece (nbd/pieces.cc).
    auto plan = co_await co_plan_read(req, enc);
    if (plan) {
      reply.pieces = std::move(*plan);
      co_return;
    }
    enc.error(reply.message, errno_to_nbd(plan.error().code), plan.error().message);
    co_return;
  }
  auto r = co_await co_read_pieces(req, enc, reply);
  if (!r) {
    reply.pipe.reset();
    reply.message.clear();
    enc.error(reply.message, errno_to_nbd(r.error().code), r.error().message);
  }
}

Task<Result<void>> Connection::co_read_pieces(const Request& req, const ReplyEncoder& enc,
                                              Reply& reply) {
  STRATA_CO_TRY_ASSIGN(std::vector<ReadPiece> pieces, co_await co_plan_read(req, enc));
  if (may_splice(req)) {
    reply.pipe = co_await pipes_.co_take();
    if (reply.pipe) {
      auto r = co_await co_read_into_pipe(pieces, enc, *reply.pipe);
      if (r) co_return r;
      // ENOTSUP: the export cannot splice; EAGAIN: the pipe filled up (data
      // scattered over more pages than it holds). Both read into memory.
      if (r.error().code != ENOTSUP && r.error().code != EAGAIN) co_return r;
    }
    reply.pipe.reset();  // given back emptied
  }
  co_return co_await co_read_into_memory(req, pieces, enc, reply);
}

bool Connection::may_splice(const Request& req) const {
  return req.length >= kSpliceReadThreshold && req.length + kPipeSlack <= pipes_.pipe_bytes() &&
         channel_->can_splice();
}

Task<Result<std::vector<ReadPiece>>> Connection::co_plan_read(const Request& req,
                                                              const ReplyEncoder& enc) {
  std::vector<ReadPiece> pieces;
  bool sparse = enc.mode() != ReplyMode::kSimple && !(req.flags & kCmdFlagDf) &&
                req.length >= kSparseReadThreshold;
  Export& exp = *session_.exp;
  if (!sparse || exp.known_data(req.offset, req.length)) {
    pieces.push_back({req.offset, req.length, false});
    co_return pieces;
  }
  uint64_t end = req.offset + req.length;
  for (uint64_t pos = req.offset; pos < end;) {
    // Ask about the whole rest of the export: the answer costs the same and
    // a long data extent spares the following reads their lookups.
    auto st = co_await co_chain_status(exp.root(), pos, exp.size() - pos);
    if (!st) co_return std::move(st).error();
    bool hole = (st->flags & kStatusZero) != 0;
    if (!hole) exp.note_data(pos, st->bytes);
    uint64_t len = std::min(st->bytes, end - pos);
    if (!pieces.empty() && pieces.back().hole == hole) {
      pieces.back().length += len;
    } else {
      pieces.push_back({pos, len, hole});
    }
    pos += len;
  }
  co_return pieces;
}

Task<Result<void>> Connection::co_read_into_pipe(const std::vector<ReadPiece>& pieces,
                                                 const ReplyEncoder& enc, Pipe& pipe) {
  Child* root = session_.exp->root();
  Message headers;
  for (size_t i = 0; i < pieces.size(); i++) {
    const ReadPiece& p = pieces[i];
    enc.piece_header(headers, p, i + 1 == pieces.size());
    STRATA_CO_TRY(pipe.fill_from(headers.iov()));
    headers.clear();
    if (!p.hole) STRATA_CO_TRY(co_await root->co_splice_read(p.offset, p.length, pipe));
  }
  co_return Result<void>{};
}

Task<Result<void>> Connection::co_read_into_memory(const Request& req,
                                                   const std::vector<ReadPiece>& pieces,
                                                   const ReplyEncoder& enc, Reply& reply) {
  Child* root = session_.exp->root();
  reply.data = buffers_.take(static_cast<size_t>(req.length));
  IoVec data(reply.data.data(), static_cast<size_t>(req.length));
  for (const auto& p : pieces) {
    if (p.hole) continue;
    STRATA_CO_TRY(co_await root->co_preadv(p.offset, data.slice(p.offset - req.offset, p.length)));
  }
  for (size_t i = 0; i < pieces.size(); i++) {
    const ReadPiece& p = pieces[i];
    enc.piece_header(reply.message, p, i + 1 == pieces.size());
    if (!p.hole) reply.message.add_ref(data.slice(p.offset - req.offset, p.length));
  }
  co_return Result<void>{};
}

}  // namespace strata::nbd
