#include "block/core/filter.h"

#include "block/core/graph.h"

namespace strata {

Task<Result<void>> FilterDriver::co_open(OpenContext& ctx) {
  auto file = co_await ctx.co_open_child("file", kRoleFilterChild, true);
  if (!file) co_return std::move(file).error();
  file_ = *file;
  co_return Result<void>{};
}

bool FilterDriver::supports_compressed_writes() const {
  return file_ && file_->node()->driver().supports_compressed_writes();
}

Task<Result<void>> FilterDriver::co_preadv(uint64_t offset, const IoVec& iov, uint32_t flags) {
  return file_->co_preadv(offset, iov, flags);
}

Task<Result<void>> FilterDriver::co_splice_read(uint64_t offset, uint64_t bytes, Pipe& pipe) {
  return file_->co_splice_read(offset, bytes, pipe);
}

Task<Result<void>> FilterDriver::co_pwritev(uint64_t offset, const IoVec& iov, uint32_t flags) {
  return file_->co_pwritev(offset, iov, flags);
}

Task<Result<void>> FilterDriver::co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) {
  return file_->co_pwrite_zeroes(offset, bytes, flags);
}

Task<Result<void>> FilterDriver::co_pdiscard(uint64_t offset, uint64_t bytes) {
  return file_->co_pdiscard(offset, bytes);
}

Task<Result<BlockStatus>> FilterDriver::co_block_status(uint64_t offset, uint64_t bytes) {
  BlockStatus st;
  st.flags = kStatusRecurse;
  st.bytes = bytes;
  st.map_offset = offset;
  st.map_node = file_->node();
  co_return st;
}

Task<Result<void>> FilterDriver::co_truncate(uint64_t size, bool exact, Preallocation prealloc) {
  return file_->co_truncate(size, exact, prealloc);
}

uint64_t FilterDriver::size() const {
  return file_ ? file_->node()->size() : 0;
}

Limits FilterDriver::limits() const {
  return file_ ? file_->node()->limits() : Limits{};
}

}  // namespace strata
