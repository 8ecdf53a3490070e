#include "block/drivers/qcow2/cache.h"

#include <cstring>

namespace strata::qcow2 {

Task<Result<std::shared_ptr<Table>>> MetadataCache::co_get(uint64_t offset) {
  auto it = tables_.find(offset);
  if (it != tables_.end()) {
    it->second->last_use = ++clock_;
    co_return it->second;
  }
  auto t = std::make_shared<Table>();
  t->offset = offset;
  t->data = AlignedBuffer(table_size_);
  auto r = co_await file_->co_preadv(offset, t->data.iov(), 0);
  if (!r) co_return std::move(r).error();
  // Another coroutine may have loaded it while this one waited.
  it = tables_.find(offset);
  if (it != tables_.end()) {
    it->second->last_use = ++clock_;
    co_return it->second;
  }
  STRATA_CO_TRY(co_await co_make_room());
  t->last_use = ++clock_;
  tables_[offset] = t;
  co_return t;
}

Task<Result<std::shared_ptr<Table>>> MetadataCache::co_get_new(uint64_t offset) {
  auto t = std::make_shared<Table>();
  t->offset = offset;
  t->data = AlignedBuffer(table_size_);
  std::memset(t->bytes(), 0, table_size_);
  STRATA_CO_TRY(co_await co_make_room());
  t->last_use = ++clock_;
  tables_[offset] = t;
  co_return t;
}

bool MetadataCache::has_dirty() const {
  for (const auto& [off, t] : tables_) {
    if (t->dirty) return true;
  }
  return false;
}

Task<Result<void>> MetadataCache::co_write(Table& t) {
  if (write_check_) STRATA_CO_TRY(write_check_(t.offset));
  t.dirty = false;
  auto r = co_await file_->co_pwritev(t.offset, t.data.iov(), 0);
  if (!r) t.dirty = true;
  co_return r;
}

Task<Result<void>> MetadataCache::co_make_room() {
  while (tables_.size() >= capacity_) {
    auto victim = tables_.begin();
    for (auto it = tables_.begin(); it != tables_.end(); ++it) {
      if (it->second->last_use < victim->second->last_use) victim = it;
    }
    std::shared_ptr<Table> t = victim->second;
    if (t->dirty) {
      if (before_writeback_) STRATA_CO_TRY(co_await before_writeback_());
      STRATA_CO_TRY(co_await co_write(*t));
    }
    // It may have been touched again while being written.
    auto again = tables_.find(t->offset);
    if (again != tables_.end() && again->second == t && !t->dirty) tables_.erase(again);
  }
  co_return Result<void>{};
}

Task<Result<void>> MetadataCache::co_flush() {
  if (!has_dirty()) co_return Result<void>{};
  if (before_writeback_) STRATA_CO_TRY(co_await before_writeback_());
  std::vector<std::shared_ptr<Table>> dirty;
  for (auto& [off, t] : tables_) {
    if (t->dirty) dirty.push_back(t);
  }
  for (auto& t : dirty) STRATA_CO_TRY(co_await co_write(*t));
  co_return Result<void>{};
}

}  // namespace strata::qcow2
