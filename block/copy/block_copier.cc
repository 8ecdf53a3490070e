#include "block/copy/block_copier.h"

#include <algorithm>

#include "block/core/block_status.h"

namespace strata {

BlockCopier::BlockCopier(Child& source, Child& target, BlockCopierOptions options,
                         Throttle throttle)
    : source_(&source), target_(&target), options_(options), throttle_(std::move(throttle)) {}

AlignedBuffer BlockCopier::take_buffer() {
  if (pool_.empty()) return AlignedBuffer(options_.max_chunk);
  AlignedBuffer buf = std::move(pool_.back());
  pool_.pop_back();
  return buf;
}

void BlockCopier::give_buffer(AlignedBuffer buf) {
  pool_.push_back(std::move(buf));
}

Task<ChunkOutcome> BlockCopier::co_copy_data(uint64_t offset, uint64_t bytes) {
  if (throttle_) co_await throttle_(bytes);
  AlignedBuffer buf = take_buffer();
  ChunkOutcome out;
  for (uint64_t done = 0; done < bytes && out.result;) {
    uint64_t len = std::min<uint64_t>(buf.size(), bytes - done);
    IoVec iov(buf.data(), len);
    out.result = co_await source_->co_preadv(offset + done, iov);
    if (!out.result) {
      out.read_failed = true;
      break;
    }
    uint32_t flags = options_.compress ? kReqWriteCompressed : 0;
    if (options_.serialising) flags |= kReqSerialising;
    if (options_.target_zeroes) options_.target_zeroes->forget(offset + done, len);
    out.result = co_await target_->co_pwritev(offset + done, iov, flags);
    done += len;
  }
  give_buffer(std::move(buf));
  if (out.result) copied_ += bytes;
  co_return out;
}

Task<ChunkOutcome> BlockCopier::co_copy(uint64_t offset, uint64_t bytes) {
  uint64_t end = offset + bytes;
  for (uint64_t pos = offset; pos < end;) {
    auto st =
        co_await co_block_status_above(*source_->node(), options_.base, pos, end - pos, source_);
    if (!st) co_return ChunkOutcome{std::move(st).error(), true, pos - offset};
    uint64_t len = std::min(st->bytes, end - pos);
    ChunkOutcome out;
    if (!st->allocated() && options_.skip_unallocated) {
      // The base already holds what this range reads as.
    } else if (st->flags & kStatusZero) {
      if (!options_.target_zeroes || !options_.target_zeroes->reads_zero(pos, len)) {
        uint32_t flags = options_.unmap ? kReqMayUnmap : 0;
        if (options_.serialising) flags |= kReqSerialising;
        out.result = co_await target_->co_pwrite_zeroes(pos, len, flags);
      }
    } else {
      out = co_await co_copy_data(pos, len);
    }
    if (!out.result) {
      out.done_bytes = pos - offset;
      co_return out;
    }
    pos += len;
  }
  co_return ChunkOutcome{};
}

}  // namespace strata
