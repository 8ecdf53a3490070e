// MemoryBudget: the bytes of request and reply buffers that all the clients
// of one NBD server may hold at once (on top of each client's own bound,
// ConnectionLimits::max_bytes).
//
// Contract: each client has an Account. co_acquire(account, bytes) returns
// the bytes granted, once they are:
// - `bytes`, when they fit in what is left of the total. Waiting requests
//   are granted in arrival order, so a large one is not overtaken forever
//   by smaller ones; but an account holding at least its fair share (the
//   total divided by the accounts that hold or wait) goes behind accounts
//   holding less, so one greedy client does not hold up the others.
// - at most `floor` bytes, at once, when the account holds nothing: the
//   caller then does the request in pieces of that size (nbd/connection.h).
//   Bytes held by a client that does not read its replies only come back
//   when it reads or goes; this is what keeps every other client going
//   meanwhile. The total can so be exceeded by one floor per account.
// - 0, when cancel() was called for the account (its connection closes).
// release() gives bytes back and grants what then fits. An Account must be
// released to zero, with no request waiting, before it is destroyed, and
// the budget must outlive its accounts.
// Thread rules: loop-thread only.
#pragma once

#include <coroutine>
#include <cstddef>
#include <cstdint>

#include "base/loop.h"
#include "strata/task.h"

namespace strata::nbd {

class MemoryBudget {
 public:
  // Defaults of an NBD server (ServerOptions).
  static constexpr size_t kDefaultTotal = 256u << 20;
  static constexpr size_t kDefaultFloor = 256u << 10;

  // `total` 0: no bound (only each client's own).
  MemoryBudget(Loop& loop, size_t total, size_t floor);
  MemoryBudget(const MemoryBudget&) = delete;
  MemoryBudget& operator=(const MemoryBudget&) = delete;
  ~MemoryBudget();

  class Account;
  // Takes `bytes` if they fit and nobody waits; the cheap path.
  bool try_acquire(Account& account, size_t bytes);
  Task<size_t> co_acquire(Account& account, size_t bytes);
  void release(Account& account, size_t bytes);
  // Ends the account's wait, if any: its co_acquire returns 0.
  void cancel(Account& account);

  size_t total() const { return total_; }
  size_t floor() const { return floor_; }
  // Bytes held by all accounts (may exceed total() by floors).
  size_t used() const { return used_; }
  size_t waiting() const { return waiting_; }

 private:
  struct Waiter {
    Account* account;
    size_t bytes;
    size_t granted = 0;
    std::coroutine_handle<> handle;
    Waiter* next = nullptr;
  };
  bool fits(size_t bytes) const { return used_ + bytes <= total_; }
  size_t fair_share() const;
  void enqueue(Waiter* w);
  void grant(Waiter* w, size_t bytes);
  void unlink(Waiter* w);
  void grant_waiters();
  void take(Account& a, size_t bytes);

  Loop& loop_;
  size_t total_;
  size_t floor_;
  size_t used_ = 0;
  size_t active_accounts_ = 0;  // accounts holding bytes or waiting
  size_t waiting_ = 0;
  Waiter* head_ = nullptr;
  Waiter* tail_ = nullptr;
};

// One client's share of a MemoryBudget.
class MemoryBudget::Account {
 public:
  Account() = default;
  Account(const Account&) = delete;
  Account& operator=(const Account&) = delete;
  size_t held() const { return held_; }

 private:
  friend class MemoryBudget;
  bool active() const { return held_ > 0 || waiter_ != nullptr; }
  size_t held_ = 0;
  Waiter* waiter_ = nullptr;
};

}  // namespace strata::nbd
