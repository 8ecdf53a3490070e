// ThrottleGroup: I/O limits shared by several users (QEMU's throttle-group
// object and block/throttle-groups.c), and ThrottleGroups, the registry of
// groups by name that the `throttle` filter looks them up in.
//
// A group holds one ThrottleState (base/throttle.h): every member's reads
// and writes fill the same buckets, so the limits hold for the members
// together. A member (one per throttle node) calls co_intercept() before
// each request; it returns when the request may go. Reads and writes are
// scheduled apart. A request goes at once when nothing of its direction is
// queued in the group and the buckets allow it; otherwise it queues on its
// member, and the group serves the members' queues in turn (round-robin),
// one request per turn, waiting between requests as long as the buckets
// say. A member's queue is first in, first out.
//
// Contract:
// - set_config() checks the limits (QEMU's messages) and applies them at
//   once: the buckets empty (as in QEMU) and queued requests are scheduled
//   again under the new limits.
// - disable_limits() (a drained throttle node; nests with enable_limits())
//   lets that member's queued and new requests go without waiting. They are
//   still counted in the buckets.
// - A member must have no queued request when it is destroyed (drain it
//   first); a group must have no member when it is removed from the
//   registry (ThrottleGroups::remove refuses: "in use").
// - Time comes from a ThrottleClock: the Loop's clock and timers by
//   default, a fake in tests.
// Thread rules: loop-thread only.
#pragma once

#include <array>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/sync.h"
#include "base/throttle.h"
#include "strata/result.h"
#include "strata/task.h"

namespace strata {

class Loop;
class ThrottleGroup;

// Time for a group: a monotonic clock and one timer per direction.
class ThrottleClock {
 public:
  virtual ~ThrottleClock() = default;
  virtual uint64_t now_ns() const = 0;
  // Calls `fn` once after `delay_ns`, replacing what `dir`'s timer had.
  virtual void start(ThrottleDirection dir, uint64_t delay_ns, std::function<void()> fn) = 0;
  virtual void stop(ThrottleDirection dir) = 0;
};

// The Loop's monotonic clock and timers.
std::unique_ptr<ThrottleClock> make_loop_throttle_clock(Loop& loop);

// One user of a group (a throttle node). Registers itself on construction.
class ThrottleGroupMember {
 public:
  explicit ThrottleGroupMember(ThrottleGroup& group);
  ~ThrottleGroupMember();
  ThrottleGroupMember(const ThrottleGroupMember&) = delete;
  ThrottleGroupMember& operator=(const ThrottleGroupMember&) = delete;

  ThrottleGroup& group() const { return group_; }
  // Returns when a request of `bytes` in direction `dir` may go, and
  // counts it.
  Task<void> co_intercept(ThrottleDirection dir, uint64_t bytes);
  // Requests of this member go without waiting while disabled (nests).
  void disable_limits();
  void enable_limits();
  bool limits_disabled() const { return disabled_ > 0; }
  // Requests of `dir` queued on this member.
  size_t queued(ThrottleDirection dir) const { return side(dir).pending; }

 private:
  friend class ThrottleGroup;
  struct Side {
    explicit Side(Loop& loop) : queue(loop) {}
    CoQueue queue;
    size_t pending = 0;  // queued, not resumed yet
    size_t grants = 0;   // turns the group gave and no waiter took yet
  };
  Side& side(ThrottleDirection dir) { return dir == ThrottleDirection::kRead ? reads_ : writes_; }
  const Side& side(ThrottleDirection dir) const {
    return dir == ThrottleDirection::kRead ? reads_ : writes_;
  }
  Task<void> co_wait_turn(ThrottleDirection dir);
  // The group's turn for this member: one queued request goes.
  void grant(ThrottleDirection dir);

  ThrottleGroup& group_;
  Side reads_;
  Side writes_;
  int disabled_ = 0;
};

class ThrottleGroup {
 public:
  ThrottleGroup(Loop& loop, std::string name, std::unique_ptr<ThrottleClock> clock);
  ~ThrottleGroup();
  ThrottleGroup(const ThrottleGroup&) = delete;
  ThrottleGroup& operator=(const ThrottleGroup&) = delete;

  const std::string& name() const { return name_; }
  Loop& loop() const { return loop_; }
  // The limits (no bucket levels).
  const ThrottleConfig& config() const { return state_.config(); }
  // Checks and applies new limits; on an error nothing changes.
  Result<void> set_config(const ThrottleConfig& config);
  size_t member_count() const { return members_.size(); }

 private:
  friend class ThrottleGroupMember;
  struct Turn {
    ThrottleGroupMember* token = nullptr;  // whose turn it is or was last
    bool timer_armed = false;              // waiting for the buckets to leak
    bool granted = false;                  // a member's request was let go, not resumed yet
    bool busy() const { return timer_armed || granted; }
  };
  Turn& turn(ThrottleDirection dir) { return turns_[static_cast<size_t>(dir)]; }
  void add_member(ThrottleGroupMember* m);
  void remove_member(ThrottleGroupMember* m);
  // Must a new request of `m` queue rather than go now?
  bool must_queue(ThrottleGroupMember& m, ThrottleDirection dir);
  // Schedules the next queued request of `dir` unless one is scheduled:
  // the first member with queued requests from the token on (`advance`:
  // after the token) gets the next turn, now or when the buckets allow.
  void schedule(ThrottleDirection dir, bool advance);
  ThrottleGroupMember* next_queued(ThrottleDirection dir, bool advance) const;
  void on_timer(ThrottleDirection dir);
  // A granted request resumed: the turn is over.
  void turn_taken(ThrottleDirection dir) { turn(dir).granted = false; }
  void account(ThrottleDirection dir, uint64_t bytes) { state_.account(dir, bytes); }

  Loop& loop_;
  std::string name_;
  std::unique_ptr<ThrottleClock> clock_;
  ThrottleState state_;
  std::vector<ThrottleGroupMember*> members_;  // registration order (the round)
  std::array<Turn, 2> turns_;
};

// The groups of one Engine, by name (the Graph holds it).
class ThrottleGroups {
 public:
  explicit ThrottleGroups(Loop& loop) : loop_(loop) {}
  // A new group with checked limits. Names are unique.
  Result<ThrottleGroup*> create(const std::string& name, const ThrottleConfig& config);
  // Removes a group without members; one in use stays ("object 'x' is in
  // use, can not be deleted", as QEMU words it).
  Result<void> remove(const std::string& name);
  ThrottleGroup* find(const std::string& name) const;

 private:
  Loop& loop_;
  std::map<std::string, std::unique_ptr<ThrottleGroup>> groups_;
};

}  // namespace strata
