#include "block/drivers/qcow2/refcount_rebuild.h"

#include <algorithm>
#include <cstring>

#include "block/drivers/qcow2/qcow2.h"

namespace strata::qcow2 {

namespace {

uint64_t max_refcount_for(uint32_t order) {
  return order == 6 ? UINT64_MAX : (uint64_t(1) << (1u << order)) - 1;
}

// used[bi]: refcount block bi describes at least one cluster in use.
std::vector<bool> blocks_in_use(const std::vector<uint64_t>& counts, uint64_t entries) {
  std::vector<bool> used(div_round_up(counts.size(), entries), false);
  for (uint64_t c = 0; c < counts.size(); c++) {
    if (counts[c]) used[c / entries] = true;
  }
  return used;
}

// How many blocks and table clusters a structure needs when its own
// clusters start at `first_free`: a fixed point, since the new clusters may
// need blocks (and table entries) of their own.
struct Layout {
  uint64_t blocks = 0;
  uint64_t table_clusters = 0;
};

Result<Layout> plan_layout(const std::vector<bool>& used, uint64_t entries, uint64_t cs,
                           uint64_t first_free) {
  uint64_t used_count = std::count(used.begin(), used.end(), true);
  uint64_t highest_used = 0;
  for (uint64_t bi = 0; bi < used.size(); bi++) {
    if (used[bi]) highest_used = bi;
  }
  Layout l;
  for (int round = 0; round < 64; round++) {
    uint64_t own = l.blocks + l.table_clusters;
    uint64_t count = used_count;
    uint64_t highest = highest_used;
    if (own) {
      uint64_t first_bi = first_free / entries;
      uint64_t last_bi = (first_free + own - 1) / entries;
      for (uint64_t bi = first_bi; bi <= last_bi; bi++) {
        if (bi >= used.size() || !used[bi]) count++;
      }
      highest = std::max(highest, last_bi);
    }
    Layout next{count, div_round_up((highest + 1) * 8, cs)};
    if (next.blocks == l.blocks && next.table_clusters == l.table_clusters) return l;
    l = next;
  }
  return Error{EIO, "qcow2: could not lay out the new refcount structure"};
}

}  // namespace

Result<RefcountLayout> plan_refcount_structure(std::vector<uint64_t> counts, uint32_t cluster_bits,
                                               uint32_t order, uint64_t first_free) {
  uint64_t cs = uint64_t(1) << cluster_bits;
  uint64_t entries = (cs * 8) >> order;
  uint64_t max = max_refcount_for(order);
  while (!counts.empty() && counts.back() == 0) counts.pop_back();
  for (uint64_t c = 0; c < counts.size(); c++) {
    if (counts[c] > max) {
      return Error{ERANGE, "qcow2: cluster " + std::to_string(c) + " has a refcount of " +
                               std::to_string(counts[c]) + ", more than " +
                               std::to_string(1u << order) + "-bit entries hold"};
    }
  }
  first_free = std::max<uint64_t>(first_free, counts.size());
  STRATA_TRY_ASSIGN(Layout layout,
                    plan_layout(blocks_in_use(counts, entries), entries, cs, first_free));
  if (layout.table_clusters * cs > kMaxRefcountTableBytes) {
    return Error{EFBIG, "qcow2: refcount table too large"};
  }
  uint64_t own = layout.blocks + layout.table_clusters;
  counts.resize(first_free + own, 0);
  std::fill(counts.begin() + first_free, counts.end(), 1);
  std::vector<bool> used = blocks_in_use(counts, entries);
  if (uint64_t(std::count(used.begin(), used.end(), true)) != layout.blocks) {
    return Error{EIO, "qcow2: inconsistent refcount structure layout"};
  }
  RefcountLayout out;
  out.table.assign(layout.table_clusters * cs / 8, 0);
  uint64_t next = first_free;
  for (uint64_t bi = 0; bi < used.size(); bi++) {
    if (used[bi]) out.table[bi] = (next++) << cluster_bits;
  }
  out.where = RefcountStructure{next << cluster_bits, uint32_t(layout.table_clusters)};
  out.counts = std::move(counts);
  return out;
}

Task<Result<RefcountStructure>> co_write_refcount_structure(Child* file, uint32_t cluster_bits,
                                                            uint32_t order,
                                                            std::vector<uint64_t> counts,
                                                            uint64_t first_free) {
  STRATA_CO_TRY_ASSIGN(RefcountLayout plan,
                       plan_refcount_structure(std::move(counts), cluster_bits, order, first_free));
  uint64_t cs = uint64_t(1) << cluster_bits;
  uint64_t entries = (cs * 8) >> order;
  AlignedBuffer block(cs);
  for (uint64_t bi = 0; bi < plan.table.size(); bi++) {
    if (!plan.table[bi]) continue;
    std::memset(block.data(), 0, cs);
    uint64_t end = std::min<uint64_t>(plan.counts.size(), (bi + 1) * entries);
    for (uint64_t c = bi * entries; c < end; c++) {
      if (plan.counts[c]) refblock_set(block.data(), order, c - bi * entries, plan.counts[c]);
    }
    STRATA_CO_TRY(co_await file->co_pwritev(plan.table[bi], block.iov(), 0));
  }
  AlignedBuffer table_buf(uint64_t(plan.where.table_clusters) * cs);
  for (uint64_t i = 0; i < plan.table.size(); i++) {
    store_be64(table_buf.data() + i * 8, plan.table[i]);
  }
  STRATA_CO_TRY(co_await file->co_pwritev(plan.where.table_offset, table_buf.iov(), 0));
  STRATA_CO_TRY(co_await file->co_flush());
  co_return plan.where;
}

Task<Result<void>> Qcow2Driver::co_install_refcounts(RefcountStructure s, uint32_t order) {
  Header saved = header_;
  header_.refcount_table_offset = s.table_offset;
  header_.refcount_table_clusters = s.table_clusters;
  Result<void> r;
  if (order != header_.refcount_order) {
    header_.refcount_order = order;
    r = co_await co_write_header();
  } else {
    uint8_t fields[12];
    store_be64(fields, s.table_offset);
    store_be32(fields + 8, s.table_clusters);
    r = co_await file_->co_pwrite(48, {fields, sizeof fields});
    if (r) r = co_await file_->co_flush();
  }
  if (!r) {
    header_ = saved;
    co_return r;
  }
  size_t cache_tables = refcounts_->cache().capacity();
  refcounts_ = std::make_unique<Refcounts>(cluster_bits_, order, cache_tables);
  install_write_checks();
  co_return co_await refcounts_->co_load(file_, s.table_offset, s.table_clusters, check_mode_);
}

}  // namespace strata::qcow2
