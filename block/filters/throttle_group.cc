#include "block/filters/throttle_group.h"

#include <algorithm>

#include "base/loop.h"
#include "base/timer.h"

namespace strata {

namespace {

constexpr ThrottleDirection kDirections[] = {ThrottleDirection::kRead, ThrottleDirection::kWrite};

class LoopThrottleClock final : public ThrottleClock {
 public:
  explicit LoopThrottleClock(Loop& loop) : read_timer_(loop), write_timer_(loop) {}
  uint64_t now_ns() const override { return Loop::now_ns(); }
  void start(ThrottleDirection dir, uint64_t delay_ns, std::function<void()> fn) override {
    timer(dir).start(delay_ns, std::move(fn));
  }
  void stop(ThrottleDirection dir) override { timer(dir).stop(); }

 private:
  Timer& timer(ThrottleDirection dir) {
    return dir == ThrottleDirection::kRead ? read_timer_ : write_timer_;
  }
  Timer read_timer_;
  Timer write_timer_;
};

}  // namespace

std::unique_ptr<ThrottleClock> make_loop_throttle_clock(Loop& loop) {
  return std::make_unique<LoopThrottleClock>(loop);
}

// ThrottleGroupMember.

ThrottleGroupMember::ThrottleGroupMember(ThrottleGroup& group)
    : group_(group), reads_(group.loop()), writes_(group.loop()) {
  group_.add_member(this);
}

ThrottleGroupMember::~ThrottleGroupMember() {
  group_.remove_member(this);
}

Task<void> ThrottleGroupMember::co_intercept(ThrottleDirection dir, uint64_t bytes) {
  if (group_.must_queue(*this, dir)) {
    Side& s = side(dir);
    s.pending++;
    group_.schedule(dir, false);
    co_await co_wait_turn(dir);
    s.pending--;
  }
  group_.account(dir, bytes);
  group_.schedule(dir, true);
}

// Waits for the group's turn, or for the limits to be disabled. A waiter
// woken for neither (disabled and enabled again meanwhile) queues again.
Task<void> ThrottleGroupMember::co_wait_turn(ThrottleDirection dir) {
  Side& s = side(dir);
  for (;;) {
    co_await s.queue.wait();
    if (s.grants > 0) {
      s.grants--;
      group_.turn_taken(dir);
      co_return;
    }
    if (limits_disabled()) co_return;
    group_.schedule(dir, false);
  }
}

void ThrottleGroupMember::grant(ThrottleDirection dir) {
  Side& s = side(dir);
  s.grants++;
  s.queue.wake_one();
}

void ThrottleGroupMember::disable_limits() {
  if (disabled_++ > 0) return;
  reads_.queue.wake_all();
  writes_.queue.wake_all();
}

void ThrottleGroupMember::enable_limits() {
  if (disabled_ > 0) disabled_--;
}

// ThrottleGroup.

ThrottleGroup::ThrottleGroup(Loop& loop, std::string name, std::unique_ptr<ThrottleClock> clock)
    : loop_(loop), name_(std::move(name)), clock_(std::move(clock)) {
  state_.configure(ThrottleConfig{}, clock_->now_ns());
}

ThrottleGroup::~ThrottleGroup() {
  for (ThrottleDirection dir : kDirections) clock_->stop(dir);
}

Result<void> ThrottleGroup::set_config(const ThrottleConfig& config) {
  STRATA_TRY(check_throttle_config(config));
  state_.configure(config, clock_->now_ns());
  // Queued requests waited for the old limits: schedule them again.
  for (ThrottleDirection dir : kDirections) {
    Turn& t = turn(dir);
    if (t.timer_armed) {
      clock_->stop(dir);
      t.timer_armed = false;
    }
    schedule(dir, false);
  }
  return {};
}

void ThrottleGroup::add_member(ThrottleGroupMember* m) {
  members_.push_back(m);
}

void ThrottleGroup::remove_member(ThrottleGroupMember* m) {
  auto it = std::find(members_.begin(), members_.end(), m);
  if (it == members_.end()) return;
  // The round goes on with the member after it.
  auto next = it + 1 == members_.end() ? members_.begin() : it + 1;
  ThrottleGroupMember* after = *next == m ? nullptr : *next;
  for (Turn& t : turns_) {
    if (t.token == m) t.token = after;
  }
  members_.erase(it);
}

bool ThrottleGroup::must_queue(ThrottleGroupMember& m, ThrottleDirection dir) {
  if (m.limits_disabled()) return false;
  if (m.side(dir).pending > 0 || turn(dir).busy()) return true;
  return state_.wait_ns(dir, clock_->now_ns()) > 0;
}

void ThrottleGroup::schedule(ThrottleDirection dir, bool advance) {
  Turn& t = turn(dir);
  if (t.busy()) return;
  ThrottleGroupMember* next = next_queued(dir, advance);
  if (!next) return;
  t.token = next;
  uint64_t wait = state_.wait_ns(dir, clock_->now_ns());
  if (wait == 0) {
    t.granted = true;
    next->grant(dir);
    return;
  }
  t.timer_armed = true;
  clock_->start(dir, wait, [this, dir] { on_timer(dir); });
}

ThrottleGroupMember* ThrottleGroup::next_queued(ThrottleDirection dir, bool advance) const {
  const Turn& t = turns_[static_cast<size_t>(dir)];
  size_t n = members_.size();
  size_t start = 0;
  auto it = std::find(members_.begin(), members_.end(), t.token);
  if (it != members_.end()) start = static_cast<size_t>(it - members_.begin()) + (advance ? 1 : 0);
  for (size_t i = 0; i < n; i++) {
    ThrottleGroupMember* m = members_[(start + i) % n];
    if (m->side(dir).pending > 0) return m;
  }
  return nullptr;
}

void ThrottleGroup::on_timer(ThrottleDirection dir) {
  turn(dir).timer_armed = false;
  schedule(dir, false);
}

// ThrottleGroups.

Result<ThrottleGroup*> ThrottleGroups::create(const std::string& name,
                                              const ThrottleConfig& config) {
  if (groups_.count(name)) return Error{EEXIST, "A group with this name already exists"};
  auto group = std::make_unique<ThrottleGroup>(loop_, name, make_loop_throttle_clock(loop_));
  STRATA_TRY(group->set_config(config));
  ThrottleGroup* out = group.get();
  groups_.emplace(name, std::move(group));
  return out;
}

Result<void> ThrottleGroups::remove(const std::string& name) {
  auto it = groups_.find(name);
  if (it == groups_.end()) return Error{ENOENT, "Throttle group '" + name + "' does not exist"};
  if (it->second->member_count() > 0) {
    return Error{EBUSY, "object '" + name + "' is in use, can not be deleted"};
  }
  groups_.erase(it);
  return {};
}

ThrottleGroup* ThrottleGroups::find(const std::string& name) const {
  auto it = groups_.find(name);
  return it == groups_.end() ? nullptr : it->second.get();
}

}  // namespace strata
