// BlockCopier: the usual chunk copy of the block jobs: from a source edge to
// a target edge, asking block status first.
//
// Contract: for each extent of the chunk, the status of the source is taken
// above `base` (block/core/block_status.h; null: the whole chain). A range
// no layer above the base allocates is skipped when `skip_unallocated`
// (commit and stream leave what the base already has); a range that reads
// as zeroes is written as zeroes (may-unmap when `unmap`), or skipped where
// `target_zeroes` knows the target reads as zeroes already (the copier
// makes it forget every range it writes data to); anything else is read from the
// source and written to the target, compressed when asked (whole target
// clusters; serialising when asked). Reads and writes go through the job's edges, so they hold
// the job's permissions. Buffers come from a pool of `max_chunk` buffers,
// one per chunk in flight. The throttle (the job's rate limit) is awaited
// for the bytes actually read and written, before they are.
// A failed copy says how far from its start it got (whole status extents).
// Thread rules: loop-thread only.
#pragma once

#include <functional>
#include <vector>

#include "block/copy/copy_engine.h"
#include "block/copy/zero_map.h"
#include "block/core/node.h"

namespace strata {

struct BlockCopierOptions {
  Node* base = nullptr;
  bool skip_unallocated = false;
  bool unmap = false;
  ZeroMap* target_zeroes = nullptr;  // owned by the job; null: nothing known
  bool compress = false;
  // Target writes wait for overlapping requests on the target, reads
  // included (kReqSerialising: copy-before-write).
  bool serialising = false;
  uint64_t max_chunk = 1 << 20;
};

class BlockCopier final : public ChunkCopier {
 public:
  using Throttle = std::function<Task<void>(uint64_t bytes)>;
  BlockCopier(Child& source, Child& target, BlockCopierOptions options, Throttle throttle);

  Task<ChunkOutcome> co_copy(uint64_t offset, uint64_t bytes) override;

  // Bytes read and written (not skipped or zeroed) so far.
  uint64_t bytes_copied() const { return copied_; }
  Child& target() const { return *target_; }

 private:
  Task<ChunkOutcome> co_copy_data(uint64_t offset, uint64_t bytes);
  AlignedBuffer take_buffer();
  void give_buffer(AlignedBuffer buf);

  Child* source_;
  Child* target_;
  BlockCopierOptions options_;
  Throttle throttle_;
  std::vector<AlignedBuffer> pool_;
  uint64_t copied_ = 0;
};

}  // namespace strata
