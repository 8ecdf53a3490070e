// mirror_top: the filter a mirror job (and an active commit) puts above its
// source, as QEMU's mirror_top. It forwards everything to its `file` child
// (the source); while its job is in write-blocking mode, a guest write,
// write-zeroes or discard waits for copies of overlapping ranges in flight,
// goes to the source, and then goes to the target before it completes, so
// the target never falls behind. Any other write passes through and is then
// told to the job, which records it unless its dirty bitmap does already
// (background mode).
//
// Contract: opened only by jobs (blockdev-add refuses the driver). The job
// attaches itself with set_sink() and detaches before the node goes; after
// stop() the filter takes no permission on its child any more (the job's
// exit, before the graph is changed back). For a commit the filter does not
// take consistent-read on its child and shares write, so that the base below
// can be written by the job (QEMU's is_commit permissions).
// Thread rules: loop-thread only.
#pragma once

#include "block/core/filter.h"
#include "block/core/range_lock.h"

namespace strata {

enum class MirrorMethod { kCopy, kZero, kDiscard };

// A guest write on its way through the write-blocking path: the range
// held against copies.
struct ActiveWrite {
  RangeLock::Guard held;
};

// The job behind a mirror_top filter.
class MirrorSink {
 public:
  virtual ~MirrorSink() = default;
  // Whether guest writes must reach the target before they complete now.
  virtual bool copy_to_target() const = 0;
  // Before such a write reaches the source: waits for copies of the range
  // in flight and holds the range against new ones until released.
  virtual Task<ActiveWrite> co_begin_active_write(uint64_t offset, uint64_t bytes) = 0;
  // After the source took it: the same write to the target (errors go to
  // the job's policy, never to the guest, as in QEMU).
  virtual Task<void> co_active_write(ActiveWrite& write, MirrorMethod method, uint64_t offset,
                                     uint64_t bytes, const IoVec* iov, uint32_t flags) = 0;
  // After a write that did not reach the target (not write-blocking then,
  // or the source failed it) is done with the source, successful or not:
  // the range is still to copy.
  virtual void note_source_write(uint64_t offset, uint64_t bytes) = 0;
};

class MirrorTopDriver final : public FilterDriver {
 public:
  void set_sink(MirrorSink* sink) { sink_ = sink; }
  void set_commit(bool commit) { commit_ = commit; }
  void stop() { stopped_ = true; }

  Task<Result<void>> co_pwritev(uint64_t offset, const IoVec& iov, uint32_t flags) override;
  Task<Result<void>> co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) override;
  Task<Result<void>> co_pdiscard(uint64_t offset, uint64_t bytes) override;
  void child_perm(const Child& child, uint64_t perm, uint64_t shared, uint64_t* nperm,
                  uint64_t* nshared) const override;

 private:
  Task<Result<void>> co_write(MirrorMethod method, uint64_t offset, uint64_t bytes,
                              const IoVec* iov, uint32_t flags);

  MirrorSink* sink_ = nullptr;
  bool commit_ = false;
  bool stopped_ = false;
};

// The registered driver name.
inline constexpr const char* kMirrorTopDriver = "mirror_top";

}  // namespace strata
