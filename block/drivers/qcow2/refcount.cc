#include "block/drivers/qcow2/refcount.h"

#include <algorithm>
#include <cstring>
#include <iterator>

namespace strata::qcow2 {

namespace {
Error corrupt(const std::string& what) {
  return Error{EIO, "qcow2: " + what};
}

Error unaligned_block(uint64_t bi) {
  return corrupt("refcount block of reftable index " + std::to_string(bi) +
                 " is not cluster aligned");
}
}  // namespace

Task<Result<void>> Refcounts::co_load(Child* file, uint64_t table_offset, uint32_t table_clusters,
                                      bool lenient) {
  file_ = file;
  blocks_.set_file(file);
  table_offset_ = table_offset;
  table_clusters_ = table_clusters;
  uint64_t bytes = uint64_t(table_clusters) << cluster_bits_;
  AlignedBuffer buf(bytes);
  STRATA_CO_TRY(co_await file->co_preadv(table_offset, buf.iov(), 0));
  table_.resize(bytes / 8);
  for (size_t i = 0; i < table_.size(); i++) {
    uint64_t e = load_be64(buf.data() + i * 8);
    if (!lenient && (e & ~kRefTableOffsetMask)) {
      co_return corrupt("refcount table entry has reserved bits set");
    }
    if (!lenient && (e & (cluster_size() - 1))) {
      co_return corrupt("refcount block offset is not cluster aligned");
    }
    table_[i] = e;
  }
  index_blocks();
  co_return Result<void>{};
}

void Refcounts::index_blocks() {
  block_offsets_.clear();
  for (uint64_t e : table_) {
    if (e) block_offsets_.insert(e);
  }
}

bool Refcounts::overlaps_block(uint64_t offset, uint64_t bytes) const {
  if (bytes == 0) return false;
  // The last block starting before the end of the range, if any.
  auto it = block_offsets_.lower_bound(offset + bytes);
  if (it == block_offsets_.begin()) return false;
  return *std::prev(it) + cluster_size() > offset;
}

uint64_t refblock_get(const uint8_t* block, uint32_t order, uint64_t i) {
  uint32_t bits = 1u << order;
  if (bits < 8) {
    uint64_t bit = i * bits;
    return (block[bit / 8] >> (bit % 8)) & ((1u << bits) - 1);
  }
  const uint8_t* p = block + i * (bits / 8);
  uint64_t v = 0;
  for (uint32_t b = 0; b < bits / 8; b++) v = v << 8 | p[b];
  return v;
}

void refblock_set(uint8_t* block, uint32_t order, uint64_t i, uint64_t v) {
  uint32_t bits = 1u << order;
  if (bits < 8) {
    uint64_t bit = i * bits;
    uint8_t mask = uint8_t(((1u << bits) - 1) << (bit % 8));
    block[bit / 8] = uint8_t((block[bit / 8] & ~mask) | ((v << (bit % 8)) & mask));
    return;
  }
  uint8_t* p = block + i * (bits / 8);
  for (int b = int(bits / 8) - 1; b >= 0; b--) {
    p[b] = uint8_t(v);
    v >>= 8;
  }
}

Task<Result<uint64_t>> Refcounts::co_get(uint64_t cluster_index) {
  uint64_t bi = cluster_index / block_entries();
  if (bi >= table_.size() || table_[bi] == 0) co_return uint64_t{0};
  if (entry_damaged(bi)) co_return unaligned_block(bi);
  STRATA_CO_TRY_ASSIGN(auto block, co_await blocks_.co_get(table_[bi]));
  co_return read_entry(block->bytes(), cluster_index % block_entries());
}

Task<Result<void>> Refcounts::co_set(uint64_t cluster_index, uint64_t value) {
  uint64_t bi = cluster_index / block_entries();
  STRATA_CO_TRY(co_await co_ensure_block(bi));
  if (entry_damaged(bi)) co_return unaligned_block(bi);
  // A block the table names past the end of the file is not one Strata
  // wrote (blocks are written before the table names them): refuse to
  // write there rather than grow the file to a hostile offset.
  if (table_[bi] >= file_->node()->size()) {
    co_return corrupt("refcount block offset is beyond the end of the file");
  }
  STRATA_CO_TRY_ASSIGN(auto block, co_await blocks_.co_get(table_[bi]));
  write_entry(block->bytes(), cluster_index % block_entries(), value);
  blocks_.mark_dirty(*block);
  co_return Result<void>{};
}

Task<Result<void>> Refcounts::co_update(uint64_t offset, uint64_t count, int64_t delta,
                                        bool discard, uint64_t* done) {
  uint64_t first = offset >> cluster_bits_;
  for (uint64_t c = first; c < first + count; c++) {
    if (done) *done = c - first;
    STRATA_CO_TRY_ASSIGN(uint64_t old, co_await co_get(c));
    if (delta < 0 && old < uint64_t(-delta)) {
      co_return corrupt("refcount underflow for cluster " + std::to_string(c));
    }
    if (delta > 0 && max_refcount() - old < uint64_t(delta)) {
      co_return Error{ERANGE, "qcow2: refcount overflow for cluster " + std::to_string(c)};
    }
    uint64_t now = old + delta;
    STRATA_CO_TRY(co_await co_set(c, now));
    if (now == 0) free_index_ = std::min(free_index_, c);
    if (now == 0 && discard) {
      uint64_t at = c << cluster_bits_;
      if (!freed_.empty() && freed_.back().first + freed_.back().second == at) {
        freed_.back().second += cluster_size();
      } else {
        freed_.emplace_back(at, cluster_size());
      }
    }
  }
  co_return Result<void>{};
}

Task<void> Refcounts::co_discard_freed() {
  auto freed = std::move(freed_);
  freed_.clear();
  for (const auto& [offset, bytes] : freed) {
    uint64_t end = (offset + bytes) >> cluster_bits_;
    uint64_t run_start = offset >> cluster_bits_;
    for (uint64_t c = run_start; c <= end; c++) {
      // A cluster allocated again since it was freed keeps its data.
      bool still_free = false;
      if (c < end) {
        auto rc = co_await co_get(c);
        still_free = rc && *rc == 0;
      }
      if (still_free) continue;
      if (c > run_start) {
        (void)co_await file_->co_pdiscard(run_start << cluster_bits_, (c - run_start)
                                                                          << cluster_bits_);
      }
      run_start = c + 1;
    }
  }
}

Task<Result<void>> Refcounts::co_write_table_entry(uint64_t bi) {
  if (growing_ || bi >= (uint64_t(table_clusters_) << cluster_bits_) / 8) co_return Result<void>{};
  uint8_t buf[8];
  store_be64(buf, table_[bi]);
  STRATA_CO_TRY(check_write(table_offset_ + bi * 8, 8, WriteKind::kRefcountTable));
  co_return co_await file_->co_pwrite(table_offset_ + bi * 8, {buf, 8});
}

// Writes a new, empty refcount block for `bi` at `offset` (a free cluster
// whose own refcount is already accounted for) and links it in the table:
// the block reaches the disk before the table entry naming it.
Task<Result<void>> Refcounts::co_place_block(uint64_t bi, uint64_t offset) {
  STRATA_CO_TRY_ASSIGN(auto block, co_await blocks_.co_get_new(offset));
  if (offset / cluster_size() / block_entries() == bi) {
    write_entry(block->bytes(), (offset / cluster_size()) % block_entries(), 1);
  }
  STRATA_CO_TRY(co_await blocks_.co_flush());
  STRATA_CO_TRY(check_write(offset, cluster_size(), WriteKind::kRefcountBlock));
  STRATA_CO_TRY(co_await file_->co_pwritev(offset, block->data.iov(), 0));
  STRATA_CO_TRY(co_await file_->co_flush());
  table_[bi] = offset;
  block_offsets_.insert(offset);
  STRATA_CO_TRY(co_await co_write_table_entry(bi));
  co_return Result<void>{};
}

// Creates the missing refcount block `bi` in the first free cluster. That
// cluster is described either by the new block itself, or by an existing
// block; if its own block is missing too, that one is created first.
Task<Result<void>> Refcounts::co_ensure_block(uint64_t bi) {
  if (bi < table_.size() && table_[bi] != 0) co_return Result<void>{};
  if (bi >= table_.size()) STRATA_CO_TRY(co_await co_grow_table(bi + 1));
  while (table_[bi] == 0) {
    STRATA_CO_TRY_ASSIGN(uint64_t c, co_await co_find_free_run(1));
    uint64_t cb = c / block_entries();
    uint64_t offset = c << cluster_bits_;
    if (cb == bi) {
      STRATA_CO_TRY(co_await co_place_block(bi, offset));
    } else if (cb < table_.size() && table_[cb] != 0) {
      STRATA_CO_TRY(co_await co_set(c, 1));
      STRATA_CO_TRY(co_await co_place_block(bi, offset));
    } else {
      if (cb >= table_.size()) STRATA_CO_TRY(co_await co_grow_table(cb + 1));
      STRATA_CO_TRY(co_await co_place_block(cb, offset));
    }
  }
  co_return Result<void>{};
}

Task<Result<void>> Refcounts::co_grow_table(uint64_t min_entries) {
  if (growing_) co_return Error{EAGAIN, "qcow2: refcount table growth collided"};
  uint64_t per_cluster = cluster_size() / 8;
  uint64_t entries = std::max<uint64_t>(min_entries, table_.size() * 3 / 2 + 1);
  std::vector<uint64_t> old_table = table_;
  uint64_t old_offset = table_offset_;
  uint32_t old_clusters = table_clusters_;
  for (int attempt = 0; attempt < 8; attempt++, entries *= 2) {
    entries = round_up(entries, per_cluster);
    if (entries * 8 > kMaxRefcountTableBytes)
      co_return Error{EFBIG, "qcow2: refcount table too large"};
    table_ = old_table;
    table_.resize(entries, 0);
    index_blocks();
    growing_ = true;
    uint64_t clusters = entries / per_cluster;
    auto where = co_await co_alloc(clusters);
    growing_ = false;
    if (!where && where.error().code == EAGAIN) continue;
    if (!where) {
      table_ = old_table;
      index_blocks();
      co_return std::move(where).error();
    }
    // New refcount blocks and the new table reach the disk before the header.
    STRATA_CO_TRY(co_await blocks_.co_flush());
    AlignedBuffer buf(entries * 8);
    for (uint64_t i = 0; i < entries; i++) store_be64(buf.data() + i * 8, table_[i]);
    STRATA_CO_TRY(check_write(*where, entries * 8, WriteKind::kNewRefcountTable));
    STRATA_CO_TRY(co_await file_->co_pwritev(*where, buf.iov(), 0));
    STRATA_CO_TRY(co_await file_->co_flush());
    uint8_t hdr[12];
    store_be64(hdr, *where);
    store_be32(hdr + 8, uint32_t(clusters));
    STRATA_CO_TRY(co_await file_->co_pwrite(48, {hdr, 12}));
    STRATA_CO_TRY(co_await file_->co_flush());
    table_offset_ = *where;
    table_clusters_ = uint32_t(clusters);
    if (old_clusters) STRATA_CO_TRY(co_await co_update(old_offset, old_clusters, -1));
    co_return Result<void>{};
  }
  co_return Error{ENOSPC, "qcow2: could not grow the refcount table"};
}

// The first run of `count` free clusters at or after the free hint;
// clusters without a refcount block are free.
Task<Result<uint64_t>> Refcounts::co_find_free_run(uint64_t count) {
  free_index_ = std::max<uint64_t>(free_index_, 1);
  uint64_t start = free_index_;
  uint64_t run = 0;
  for (uint64_t c = start;; c++) {
    if (((c + 1) << cluster_bits_) > kOffsetMask) co_return Error{EFBIG, "qcow2: image too large"};
    uint64_t bi = c / block_entries();
    if (bi < table_.size() && table_[bi] != 0) {
      STRATA_CO_TRY_ASSIGN(uint64_t rc, co_await co_get(c));
      if (rc != 0) {
        run = 0;
        if (c == free_index_) free_index_ = c + 1;
        continue;
      }
    }
    if (run == 0) start = c;
    if (++run == count) co_return start;
  }
}

Task<Result<uint64_t>> Refcounts::co_alloc(uint64_t count) {
  for (;;) {
    STRATA_CO_TRY_ASSIGN(uint64_t start, co_await co_find_free_run(count));
    uint64_t missing = UINT64_MAX;
    for (uint64_t bi = start / block_entries(); bi <= (start + count - 1) / block_entries(); bi++) {
      if (bi >= table_.size() || table_[bi] == 0) {
        missing = bi;
        break;
      }
    }
    if (missing != UINT64_MAX) {
      STRATA_CO_TRY(co_await co_ensure_block(missing));
      continue;  // the new block may sit inside the run
    }
    for (uint64_t c = start; c < start + count; c++) STRATA_CO_TRY(co_await co_set(c, 1));
    if (free_index_ == start) free_index_ = start + count;
    co_return start << cluster_bits_;
  }
}

Task<Result<uint64_t>> Refcounts::co_alloc_bytes(uint64_t bytes) {
  uint64_t cs = cluster_size();
  uint64_t pos = byte_alloc_offset_;
  if (pos != 0 && pos % cs != 0) {
    uint64_t room = cs - pos % cs;
    if (bytes <= room) {
      STRATA_CO_TRY(co_await co_update(pos, 1, 1));
      byte_alloc_offset_ = pos + bytes;
      co_return pos;
    }
    uint64_t next = (pos / cs + 1);
    STRATA_CO_TRY_ASSIGN(uint64_t rc, co_await co_get(next));
    if (rc == 0 && bytes - room <= cs) {
      STRATA_CO_TRY(co_await co_update(pos, 1, 1));
      STRATA_CO_TRY(co_await co_set(next, 1));
      byte_alloc_offset_ = pos + bytes;
      co_return pos;
    }
  }
  STRATA_CO_TRY_ASSIGN(uint64_t off, co_await co_alloc(div_round_up(bytes, cs)));
  byte_alloc_offset_ = off + bytes;
  co_return off;
}

void Refcounts::free_later(uint64_t offset, uint64_t count, bool discard) {
  if (count) pending_.push_back({offset, count, discard});
}

Task<Result<void>> Refcounts::co_apply_pending_frees(bool discard) {
  auto pending = std::move(pending_);
  pending_.clear();
  for (size_t i = 0; i < pending.size(); i++) {
    uint64_t done = 0;
    auto r = co_await co_update(pending[i].offset, pending[i].clusters, -1,
                                discard || pending[i].discard, &done);
    if (!r) {
      // Keep what was not applied (a cluster's entry changes only once
      // nothing can fail any more), for the next flush or the close.
      PendingFree rest = pending[i];
      rest.offset += done << cluster_bits_;
      rest.clusters -= done;
      pending_.push_back(rest);
      pending_.insert(pending_.end(), pending.begin() + i + 1, pending.end());
      co_return r;
    }
  }
  co_return Result<void>{};
}

Task<Result<uint64_t>> Refcounts::co_end_index() {
  for (uint64_t bi = table_.size(); bi-- > 0;) {
    if (table_[bi] == 0) continue;
    for (uint64_t i = block_entries(); i-- > 0;) {
      STRATA_CO_TRY_ASSIGN(uint64_t rc, co_await co_get(bi * block_entries() + i));
      if (rc) co_return bi* block_entries() + i + 1;
    }
  }
  co_return uint64_t{0};
}

}  // namespace strata::qcow2
