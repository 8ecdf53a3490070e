// MetadataCache: a write-back LRU cache of cluster-sized metadata tables (L2
// tables, refcount blocks) of one qcow2 image, keyed by host offset.
//
// Contract: co_get() returns a table, reading it from the file child on a
// miss; co_get_new() returns a zero-filled table for a freshly allocated
// cluster without reading. Callers mark tables dirty after changing them.
// Dirty tables are written back by co_flush() or on eviction; before any
// write-back the `before_writeback` hook runs once (it enforces QEMU's
// ordering, e.g. refcounts reach the disk before L2 tables referencing
// them). A returned Table stays valid while the caller holds the shared_ptr,
// but changes to a table evicted meanwhile are lost, so callers hold a table
// only inside one metadata critical section and never while fetching another
// table from the same cache.
// Thread rules: loop-thread only; callers serialize access with the image's
// metadata lock.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <unordered_map>

#include "block/core/node.h"
#include "strata/iovec.h"

namespace strata::qcow2 {

struct Table {
  uint64_t offset = 0;
  AlignedBuffer data;
  bool dirty = false;
  uint64_t last_use = 0;
  uint8_t* bytes() const { return data.data(); }
};

class MetadataCache {
 public:
  using Hook = std::function<Task<Result<void>>()>;

  MetadataCache(uint64_t table_size, size_t capacity)
      : table_size_(table_size), capacity_(capacity) {}
  void set_file(Child* file) { file_ = file; }
  void set_before_writeback(Hook hook) { before_writeback_ = std::move(hook); }
  // Runs before each table is written (overlap checks); an error fails the
  // write-back and leaves the table dirty.
  using WriteCheck = std::function<Result<void>(uint64_t offset)>;
  void set_write_check(WriteCheck check) { write_check_ = std::move(check); }
  void set_capacity(size_t capacity) { capacity_ = std::max<size_t>(capacity, 2); }
  size_t capacity() const { return capacity_; }

  Task<Result<std::shared_ptr<Table>>> co_get(uint64_t offset);
  Task<Result<std::shared_ptr<Table>>> co_get_new(uint64_t offset);
  void mark_dirty(Table& t) { t.dirty = true; }
  // Whether the table at `offset` is cached.
  bool contains(uint64_t offset) const { return tables_.count(offset) != 0; }
  bool has_dirty() const;
  // Writes every dirty table (after the hook).
  Task<Result<void>> co_flush();
  // Forgets a table without writing it (the cluster was freed).
  void discard(uint64_t offset) { tables_.erase(offset); }
  // Forgets everything (after the caller flushed).
  void clear() { tables_.clear(); }

 private:
  Task<Result<void>> co_make_room();
  Task<Result<void>> co_write(Table& t);

  Child* file_ = nullptr;
  uint64_t table_size_;
  size_t capacity_;
  uint64_t clock_ = 0;
  Hook before_writeback_;
  WriteCheck write_check_;
  std::unordered_map<uint64_t, std::shared_ptr<Table>> tables_;
};

}  // namespace strata::qcow2
