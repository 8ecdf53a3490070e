// The server-wide memory budget: arrival order, fair shares, floors.
#include "nbd/budget.h"

#include <algorithm>
#include <cassert>
#include <limits>

namespace strata::nbd {

MemoryBudget::MemoryBudget(Loop& loop, size_t total, size_t floor)
    : loop_(loop),
      total_(total == 0 ? std::numeric_limits<size_t>::max() : total),
      floor_(std::max<size_t>(floor, 1)) {}

MemoryBudget::~MemoryBudget() {
  assert(head_ == nullptr && "accounts still waiting on a destroyed budget");
}

size_t MemoryBudget::fair_share() const {
  return total_ / std::max<size_t>(active_accounts_, 1);
}

bool MemoryBudget::try_acquire(Account& account, size_t bytes) {
  if (head_ != nullptr || !fits(bytes) || account.waiter_) return false;
  take(account, bytes);
  return true;
}

Task<size_t> MemoryBudget::co_acquire(Account& account, size_t bytes) {
  if (bytes == 0 || account.waiter_) co_return 0;
  if (try_acquire(account, bytes)) co_return bytes;
  // Holding nothing, the account never waits: it goes on with a floor.
  if (account.held_ == 0) {
    size_t n = std::min(bytes, floor_);
    take(account, n);
    co_return n;
  }
  Waiter w{&account, bytes};
  struct Park {
    MemoryBudget* budget;
    Waiter* w;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) {
      w->handle = h;
      budget->enqueue(w);
      // Waiters ahead may be passed over (fair shares): this one may fit.
      budget->grant_waiters();
    }
    void await_resume() const noexcept {}
  };
  co_await Park{this, &w};
  co_return w.granted;
}

void MemoryBudget::enqueue(Waiter* w) {
  if (!w->account->active()) active_accounts_++;
  w->account->waiter_ = w;
  if (tail_) {
    tail_->next = w;
  } else {
    head_ = w;
  }
  tail_ = w;
  waiting_++;
}

void MemoryBudget::take(Account& a, size_t bytes) {
  if (bytes == 0) return;
  if (!a.active()) active_accounts_++;
  a.held_ += bytes;
  used_ += bytes;
}

void MemoryBudget::release(Account& account, size_t bytes) {
  bytes = std::min(bytes, account.held_);
  account.held_ -= bytes;
  used_ -= bytes;
  if (!account.active()) active_accounts_--;
  grant_waiters();
}

void MemoryBudget::cancel(Account& account) {
  if (account.waiter_) grant(account.waiter_, 0);
}

void MemoryBudget::unlink(Waiter* w) {
  Waiter* prev = nullptr;
  for (Waiter* it = head_; it != w; it = it->next) prev = it;
  (prev ? prev->next : head_) = w->next;
  if (tail_ == w) tail_ = prev;
  w->next = nullptr;
  waiting_--;
}

void MemoryBudget::grant(Waiter* w, size_t bytes) {
  Account& a = *w->account;
  unlink(w);
  a.waiter_ = nullptr;
  w->granted = bytes;
  if (bytes > 0) {
    a.held_ += bytes;  // still active: it was waiting
    used_ += bytes;
  } else if (!a.active()) {
    active_accounts_--;
  }
  loop_.post([h = w->handle] { h.resume(); });
}

// Grants in arrival order what fits. A waiter that does not fit holds up
// the ones behind it, unless its account already holds its fair share; an
// account that came to hold nothing while waiting goes on with a floor,
// wherever it waits.
void MemoryBudget::grant_waiters() {
  size_t share = fair_share();
  bool held_up = false;
  for (Waiter* w = head_; w != nullptr;) {
    Waiter* next = w->next;
    size_t held = w->account->held_;
    if (!held_up && fits(w->bytes)) {
      grant(w, w->bytes);
    } else if (held == 0) {
      grant(w, std::min(w->bytes, floor_));
    } else if (held < share) {
      held_up = true;
    }
    w = next;
  }
}

}  // namespace strata::nbd
