// Requests done in pieces: when the server's memory budget grants a client
// only a floor (nbd/budget.h), a WRITE payload is read and written to the
// image a piece at a time, and a READ reply is read and sent a piece at a
// time, holding no more than one piece of memory.
#include <algorithm>

#include "nbd/connection.h"

namespace strata::nbd {

Task<Result<void>> Connection::co_write_in_pieces(Request req, uint64_t length, size_t piece) {
  Outcome result = check_request(req);
  Child* root = session_.exp->root();
  uint32_t flags =
      (req.flags & kCmdFlagFua) || session_.exp->options().writethrough ? uint32_t{kReqFua} : 0u;
  AlignedBuffer buf = buffers_.take(piece);
  for (uint64_t done = 0; done < length;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(piece, length - done));
    // The payload is read whole even after a failure, to stay in step.
    STRATA_CO_TRY(co_await channel_->co_read_exact({buf.data(), n}));
    if (!result.error) {
      auto r = co_await root->co_pwritev(req.offset + done, IoVec(buf.data(), n), flags);
      if (!r) result = outcome_of(req, r);
    }
    done += n;
  }
  buffers_.give(std::move(buf));
  requests_.spawn(co_reply_written(req, std::move(result)));
  co_return Result<void>{};
}

Task<void> Connection::co_reply_written(Request req, Outcome result) {
  Reply reply;
  ReplyEncoder enc(mode(), req.cookie, req.offset);
  if (result.error) {
    enc.error(reply.message, result.error, result.message);
  } else {
    enc.success(reply.message);
  }
  co_await co_send(reply);
  finish_request(0);
}

Task<void> Connection::co_send_in_pieces(const Request& req, const ReplyEncoder& enc, Reply& reply,
                                         size_t piece) {
  co_await co_take_write_turn();
  Result<void> r;
  if (!channel_->closed()) {
    AlignedBuffer buf = buffers_.take(piece);
    r = co_await co_read_piece_by_piece(req, enc, reply.pieces, buf, piece);
    buffers_.give(std::move(buf));
  }
  give_write_turn();
  if (!r) channel_->close();
}

// Structured replies send each piece as a data chunk (holes as hole chunks)
// and a failed read as an error chunk. A simple reply, and a structured one
// that must not be fragmented (DF), is one header announcing all the data
// and the data behind it, so a read failing after it can only end the
// connection.
Task<Result<void>> Connection::co_read_piece_by_piece(const Request& req, const ReplyEncoder& enc,
                                                      const std::vector<ReadPiece>& pieces,
                                                      AlignedBuffer& buf, size_t piece) {
  Child* root = session_.exp->root();
  bool one_chunk = enc.mode() == ReplyMode::kSimple || (req.flags & kCmdFlagDf);
  bool started = false;
  for (size_t i = 0; i < pieces.size(); i++) {
    const ReadPiece& p = pieces[i];
    bool last = i + 1 == pieces.size();
    if (p.hole) {
      Message m;
      enc.piece_header(m, p, last);
      STRATA_CO_TRY(co_await channel_->co_write(m.iov()));
      started = true;
      continue;
    }
    for (uint64_t done = 0; done < p.length;) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(piece, p.length - done));
      Message m;
      auto read = co_await root->co_preadv(p.offset + done, IoVec(buf.data(), n));
      if (!read) {
        if (one_chunk && started) co_return std::move(read).error();
        enc.error(m, errno_to_nbd(read.error().code), read.error().message);
        co_return co_await channel_->co_write(m.iov());
      }
      if (!one_chunk) {
        enc.piece_header(m, ReadPiece{p.offset + done, n, false}, last && done + n == p.length);
      } else if (done == 0) {
        enc.piece_header(m, p, last);  // the whole piece's header, then its data
      }
      m.add_ref(IoVec(buf.data(), n));
      STRATA_CO_TRY(co_await channel_->co_write(m.iov()));
      started = true;
      done += n;
    }
  }
  co_return Result<void>{};
}

}  // namespace strata::nbd
