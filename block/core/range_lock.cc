#include "block/core/range_lock.h"

namespace strata {

namespace {
bool overlaps(uint64_t a_off, uint64_t a_len, uint64_t b_off, uint64_t b_len) {
  return a_len && b_len && a_off < b_off + b_len && b_off < a_off + a_len;
}
}  // namespace

RangeLock::Entry::Entry(RangeLock& lock, uint64_t offset, uint64_t bytes, bool exclusive)
    : lock_(lock), offset_(offset), bytes_(bytes), exclusive_(exclusive), done_(lock.loop_) {
  lock_.entries_.push_back(this);
  pos_ = std::prev(lock_.entries_.end());
}

RangeLock::Entry::~Entry() {
  lock_.entries_.erase(pos_);
  done_.wake_all();
}

Task<void> RangeLock::Entry::co_wait() {
  while (Entry* blocker = lock_.find_blocker(*this)) co_await blocker->done_.wait();
}

RangeLock::Entry* RangeLock::find_blocker(const Entry& e) const {
  for (Entry* other : entries_) {
    if (other == &e) break;  // only entries older than this one
    if ((e.exclusive_ || other->exclusive_) &&
        overlaps(e.offset_, e.bytes_, other->offset_, other->bytes_)) {
      return other;
    }
  }
  return nullptr;
}

Task<RangeLock::Guard> RangeLock::co_lock(uint64_t offset, uint64_t bytes, bool exclusive) {
  auto entry = std::make_unique<Entry>(*this, offset, bytes, exclusive);
  if (entry->must_wait()) co_await entry->co_wait();
  co_return Guard(std::move(entry));
}

RangeLock::Guard RangeLock::try_lock(uint64_t offset, uint64_t bytes, bool exclusive) {
  if (conflicts(offset, bytes, exclusive)) return Guard();
  return Guard(std::make_unique<Entry>(*this, offset, bytes, exclusive));
}

bool RangeLock::conflicts(uint64_t offset, uint64_t bytes, bool exclusive) const {
  for (const Entry* other : entries_) {
    if ((exclusive || other->exclusive_) &&
        overlaps(offset, bytes, other->offset_, other->bytes_)) {
      return true;
    }
  }
  return false;
}

}  // namespace strata
