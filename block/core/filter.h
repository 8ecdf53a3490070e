// FilterDriver: the base of every filter. It forwards each request to its
// `file` child unchanged, so a filter overrides only what it changes.
// Thread rules: loop-thread only.
#pragma once

#include "block/core/node.h"

namespace strata {

class FilterDriver : public Driver {
 public:
  // Opens the `file` child; subclasses call this first from co_open.
  Task<Result<void>> co_open(OpenContext& ctx) override;

  Task<Result<void>> co_preadv(uint64_t offset, const IoVec& iov, uint32_t flags) override;
  Task<Result<void>> co_splice_read(uint64_t offset, uint64_t bytes, Pipe& pipe) override;
  Task<Result<void>> co_pwritev(uint64_t offset, const IoVec& iov, uint32_t flags) override;
  Task<Result<void>> co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) override;
  Task<Result<void>> co_pdiscard(uint64_t offset, uint64_t bytes) override;
  Task<Result<BlockStatus>> co_block_status(uint64_t offset, uint64_t bytes) override;
  Task<Result<void>> co_truncate(uint64_t size, bool exact, Preallocation prealloc) override;
  uint64_t size() const override;
  Limits limits() const override;
  Child* filtered_child() const override { return file_; }
  bool supports_compressed_writes() const override;
  Task<Result<void>> co_reopen_prepare(const NodeFlags&) override { return accept_any_reopen(); }

 protected:
  Child* file_ = nullptr;
};

}  // namespace strata
