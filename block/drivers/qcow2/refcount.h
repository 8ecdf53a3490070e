// Refcounts: the refcount table and refcount blocks of one qcow2 image, for
// every entry width from 1 to 64 bits, with a cluster allocator.
//
// Contract: the refcount table lives in memory and is written through entry
// by entry; refcount blocks go through a write-back MetadataCache. Increments
// (allocations) land in the cache at once; decrements requested with
// free_later() are kept pending until co_apply_pending_frees(), which the
// owner calls only after the references to those clusters are gone on disk,
// so a crash can leak clusters but never leave a reference to a cluster whose
// refcount is too low, and a freed cluster is not reused before its
// reference is dropped. New refcount blocks are placed in the first cluster
// they cover (self-describing) and reach the disk before the table entry that
// names them; the table grows by copying it to new clusters, switching the
// header, then freeing the old table.
// Thread rules: loop-thread only, under the image's metadata lock.
#pragma once

#include <cstdint>
#include <functional>
#include <set>
#include <vector>

#include "block/drivers/qcow2/cache.h"
#include "block/drivers/qcow2/format.h"

namespace strata::qcow2 {

// Entry `i` of a refcount block with entries of 2^order bits.
uint64_t refblock_get(const uint8_t* block, uint32_t order, uint64_t i);
void refblock_set(uint8_t* block, uint32_t order, uint64_t i, uint64_t v);

class Refcounts {
 public:
  Refcounts(uint32_t cluster_bits, uint32_t refcount_order, size_t cache_tables)
      : cluster_bits_(cluster_bits),
        order_(refcount_order),
        blocks_(uint64_t(1) << cluster_bits, cache_tables) {}

  // Checks a metadata write before it happens (overlap checks): host range
  // [offset, offset + bytes) and the kind of structure being written.
  enum class WriteKind { kRefcountBlock, kRefcountTable, kNewRefcountTable };
  using WriteCheck = std::function<Result<void>(uint64_t offset, uint64_t bytes, WriteKind kind)>;

  // Loads the table named by the header. A damaged table (entries with
  // reserved bits or unaligned offsets) is refused unless `lenient` (check
  // and repair), in which case those entries fail every access to the
  // clusters they cover.
  Task<Result<void>> co_load(Child* file, uint64_t table_offset, uint32_t table_clusters,
                             bool lenient = false);
  // Applies to the refcount block cache's write-backs too.
  void set_write_check(WriteCheck check) {
    write_check_ = std::move(check);
    blocks_.set_write_check([this](uint64_t offset) {
      return check_write(offset, cluster_size(), WriteKind::kRefcountBlock);
    });
  }

  uint64_t cluster_size() const { return uint64_t(1) << cluster_bits_; }
  uint64_t block_entries() const { return (cluster_size() * 8) >> order_; }
  uint64_t max_refcount() const {
    return order_ == 6 ? UINT64_MAX : (uint64_t(1) << (1u << order_)) - 1;
  }
  uint64_t table_offset() const { return table_offset_; }
  uint32_t table_clusters() const { return table_clusters_; }
  const std::vector<uint64_t>& table() const { return table_; }
  MetadataCache& cache() { return blocks_; }
  // Whether host range [offset, offset + bytes) touches a refcount block
  // (an ordered index of the table's blocks: no scan of the table).
  bool overlaps_block(uint64_t offset, uint64_t bytes) const;
  uint32_t order() const { return order_; }
  // Whether table entry `bi` is damaged (reserved bits or unaligned).
  bool entry_damaged(uint64_t bi) const { return table_[bi] & (cluster_size() - 1); }

  Task<Result<uint64_t>> co_get(uint64_t cluster_index);
  // Adds `delta` to the refcount of `count` clusters starting at host `offset`.
  // With `discard`, clusters whose refcount drops to 0 are remembered for
  // co_discard_freed() (QEMU's discard passthrough for snapshot deletion,
  // emptied images and shrinking). Each cluster's entry changes at once
  // or not at all: on failure, `done` (if given) tells how many clusters
  // were updated.
  Task<Result<void>> co_update(uint64_t offset, uint64_t count, int64_t delta, bool discard = false,
                               uint64_t* done = nullptr);
  // Allocates `count` contiguous clusters (refcount 1); returns the offset.
  Task<Result<uint64_t>> co_alloc(uint64_t count);
  // Allocates `bytes` (< one cluster) for compressed data, sharing clusters
  // with earlier compressed allocations; refcounts every touched cluster.
  Task<Result<uint64_t>> co_alloc_bytes(uint64_t bytes);
  // Queues a decrement of `count` clusters at host `offset`.
  // With `discard`, the clusters are discarded in the file once freed.
  void free_later(uint64_t offset, uint64_t count, bool discard = false);
  bool has_pending_frees() const { return !pending_.empty(); }
  size_t pending_count() const { return pending_.size(); }
  // With `discard`, every cluster freed is discarded in the file afterwards;
  // without, those queued with `discard`.
  Task<Result<void>> co_apply_pending_frees(bool discard = false);
  // Discards the host clusters freed with `discard` since the last call, so
  // the file gives their space back (errors ignored: the space is merely
  // kept). Call after the refcounts are flushed.
  Task<void> co_discard_freed();
  // Drops the clusters co_discard_freed() would discard.
  void forget_freed() { freed_.clear(); }
  // Writes dirty refcount blocks.
  Task<Result<void>> co_flush() { return blocks_.co_flush(); }
  // The first cluster index past every allocated cluster.
  Task<Result<uint64_t>> co_end_index();

 private:
  Task<Result<void>> co_set(uint64_t cluster_index, uint64_t value);
  Task<Result<void>> co_ensure_block(uint64_t block_index);
  Task<Result<void>> co_place_block(uint64_t block_index, uint64_t offset);
  Task<Result<uint64_t>> co_find_free_run(uint64_t count);
  Task<Result<void>> co_grow_table(uint64_t min_entries);
  Task<Result<void>> co_write_table_entry(uint64_t block_index);
  Result<void> check_write(uint64_t offset, uint64_t bytes, WriteKind kind) const {
    return write_check_ ? write_check_(offset, bytes, kind) : Result<void>{};
  }
  void index_blocks();
  uint64_t read_entry(const uint8_t* block, uint64_t i) const {
    return refblock_get(block, order_, i);
  }
  void write_entry(uint8_t* block, uint64_t i, uint64_t v) const {
    refblock_set(block, order_, i, v);
  }

  Child* file_ = nullptr;
  uint32_t cluster_bits_;
  uint32_t order_;
  MetadataCache blocks_;
  WriteCheck write_check_;
  std::vector<uint64_t> table_;
  std::set<uint64_t> block_offsets_;  // the non-zero entries of table_
  uint64_t table_offset_ = 0;
  uint32_t table_clusters_ = 0;
  bool growing_ = false;
  uint64_t free_index_ = 0;
  uint64_t byte_alloc_offset_ = 0;  // next free byte for compressed data, 0: none
  struct PendingFree {
    uint64_t offset;
    uint64_t clusters;
    bool discard;
  };
  std::vector<PendingFree> pending_;
  std::vector<std::pair<uint64_t, uint64_t>> freed_;  // (offset, bytes) to discard
};

}  // namespace strata::qcow2
