// RangeLock: first-come, first-served locks on byte ranges, shared or
// exclusive, for a node's dispatcher (request tracking and serialising
// writes), copy engines and filters (a range being copied is held against
// guest writes, a guest write against the copy of its range).
//
// Contract: an Entry is a lock on [offset, offset + bytes): shared entries
// overlap each other freely; an exclusive entry conflicts with every entry
// it overlaps. An entry only ever waits for older entries (those added
// before it), so there is no deadlock among entries of one RangeLock and no
// starvation: an exclusive entry is not passed by later shared ones that
// overlap it. Entries are intrusive (they live in the holder's coroutine
// frame or object) and unlink themselves when destroyed, waking whoever
// waits for them; a zero-length entry overlaps nothing. Use Guard for an
// entry owned by the lock's caller.
// Thread rules: loop-thread only.
#pragma once

#include <cstdint>
#include <list>
#include <memory>

#include "base/sync.h"

namespace strata {

class RangeLock {
 public:
  explicit RangeLock(Loop& loop) : loop_(loop) {}
  RangeLock(const RangeLock&) = delete;
  RangeLock& operator=(const RangeLock&) = delete;

  class Entry {
   public:
    // Adds the entry, youngest, to `lock`; it does not wait (co_wait does).
    Entry(RangeLock& lock, uint64_t offset, uint64_t bytes, bool exclusive);
    ~Entry();
    Entry(const Entry&) = delete;
    Entry& operator=(const Entry&) = delete;

    uint64_t offset() const { return offset_; }
    uint64_t bytes() const { return bytes_; }
    bool exclusive() const { return exclusive_; }
    // Makes the entry exclusive from now on (a request that turns out to
    // need read-modify-write): later entries wait for it; the caller calls
    // co_wait() again for the older ones.
    void make_exclusive() { exclusive_ = true; }
    // Widens the entry (alignment); same rule as make_exclusive.
    void widen(uint64_t offset, uint64_t bytes) {
      offset_ = offset;
      bytes_ = bytes;
    }
    // True when an older conflicting entry exists.
    bool must_wait() const { return lock_.find_blocker(*this) != nullptr; }
    // Waits until no older entry conflicts with this one. Callers test
    // must_wait() first on hot paths so that no frame is made for nothing.
    Task<void> co_wait();

   private:
    friend class RangeLock;
    RangeLock& lock_;
    uint64_t offset_;
    uint64_t bytes_;
    bool exclusive_;
    CoQueue done_;
    std::list<Entry*>::iterator pos_;
  };

  // An entry on the heap, owned by whoever keeps the guard.
  class Guard {
   public:
    Guard() = default;
    explicit Guard(std::unique_ptr<Entry> e) : entry_(std::move(e)) {}
    bool held() const { return entry_ != nullptr; }
    void release() { entry_.reset(); }

   private:
    std::unique_ptr<Entry> entry_;
  };

  // Takes [offset, offset + bytes) and waits for older conflicting entries.
  Task<Guard> co_lock(uint64_t offset, uint64_t bytes, bool exclusive);
  // Takes the range only if nothing conflicts now (no waiting).
  Guard try_lock(uint64_t offset, uint64_t bytes, bool exclusive);
  // True if some entry overlaps the range (conflicting with a shared
  // request when `exclusive` is false, with any when true).
  bool conflicts(uint64_t offset, uint64_t bytes, bool exclusive) const;

  size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }

 private:
  Entry* find_blocker(const Entry& e) const;

  Loop& loop_;
  std::list<Entry*> entries_;  // oldest first
};

}  // namespace strata
