// The I/O dispatcher: the one place that checks requests, aligns them for
// the driver (read-modify-write), splits them, serializes overlaps that need
// it, emulates FUA and write-zeroes, checks write thresholds, marks dirty
// bitmaps and keeps statistics.
#include <algorithm>
#include <cstring>

#include "base/loop.h"
#include "block/bitmap/dirty_bitmap.h"
#include "block/core/graph.h"
#include "block/core/node.h"
#include "strata/engine.h"

namespace strata {

namespace {
constexpr uint64_t kZeroChunk = 1 << 20;      // zero buffer size for emulated write-zeroes
constexpr uint64_t kMaxCopyOnRead = 1 << 20;  // bounce buffer of a copy-on-read

uint64_t align_down(uint64_t v, uint64_t a) {
  return v / a * a;
}
uint64_t align_up(uint64_t v, uint64_t a) {
  return (v + a - 1) / a * a;
}
}  // namespace

// An in-flight request: an entry in the node's range lock (exclusive when
// serialising) and one more request for drain to wait for.
class Node::RequestScope {
 public:
  RequestScope(Node& node, uint64_t offset, uint64_t bytes, bool serialising)
      : node_(node), entry_(node.requests_, offset, bytes, serialising) {
    node_.in_flight_++;
  }
  ~RequestScope() {
    if (--node_.in_flight_ == 0) node_.idle_.wake_all();
  }
  RangeLock::Entry& entry() { return entry_; }

 private:
  Node& node_;
  RangeLock::Entry entry_;
};

Result<void> Node::check_request(uint64_t offset, uint64_t bytes, const Child* caller,
                                 bool write) const {
  if (offset > (1ull << 62) || bytes > (1ull << 62)) {
    return Error{EINVAL, "Request out of range: offset " + std::to_string(offset)};
  }
  if (write) {
    if (read_only()) return Error{EPERM, "Block node '" + name_ + "' is read-only"};
    if (caller && !(caller->perm() & (kPermWrite | kPermWriteUnchanged))) {
      return Error{EPERM, "Permission denied: '" + caller->user() + "' has not taken write on '" +
                              name_ + "'"};
    }
  }
  if (caller && caller->is_root() && offset + bytes > size()) {
    return Error{EINVAL, "Request out of range: offset " + std::to_string(offset) + " length " +
                             std::to_string(bytes) + " exceeds size " + std::to_string(size()) +
                             " of '" + name_ + "'"};
  }
  return {};
}

// True when [offset, offset+bytes) needs neither alignment nor splitting.
bool Node::is_one_driver_request(uint64_t offset, uint64_t bytes) const {
  Limits lim = limits();
  return offset % lim.request_alignment == 0 && bytes % lim.request_alignment == 0 &&
         (lim.max_transfer == 0 || bytes <= lim.max_transfer);
}

// Reads: align for the driver with throwaway head and tail, then split.
Task<Result<void>> Node::co_read_aligned(uint64_t offset, const IoVec& iov, uint32_t flags) {
  Limits lim = limits();
  uint64_t align = lim.request_alignment;
  uint64_t start = align_down(offset, align);
  uint64_t end = align_up(offset + iov.size(), align);
  AlignedBuffer head, tail;
  IoVec full;
  if (start < offset) {
    head = AlignedBuffer(align);
    full.append(head.data(), offset - start);
  }
  full.append(iov);
  if (end > offset + iov.size()) {
    tail = AlignedBuffer(align);
    full.append(tail.data(), end - (offset + iov.size()));
  }
  uint64_t chunk = lim.max_transfer ? std::max<uint64_t>(align_down(lim.max_transfer, align), align)
                                    : end - start;
  for (uint64_t pos = start; pos < end; pos += chunk) {
    uint64_t len = std::min(chunk, end - pos);
    auto r = co_await driver_->co_preadv(pos, full.slice(pos - start, len), flags);
    if (!r) co_return r;
  }
  co_return Result<void>{};
}

Task<Result<void>> Node::co_preadv(uint64_t offset, const IoVec& iov, uint32_t flags,
                                   const Child* caller) {
  while (must_wait_unquiesced(caller)) co_await co_wait_unquiesced(caller);
  if (auto r = check_request(offset, iov.size(), caller, false); !r) {
    stats_.invalid_rd_operations++;
    co_return r;
  }
  if (iov.size() == 0) co_return Result<void>{};
  if ((flags & kReqCopyOnRead) && !read_only()) {
    uint64_t t0 = Loop::now_ns();
    auto r = co_await co_copy_on_read(offset, iov, flags & ~kReqCopyOnRead);
    account_read(r.ok(), iov.size(), t0);
    co_return r;
  }
  flags &= ~kReqCopyOnRead;
  RequestScope scope(*this, offset, iov.size(), false);
  if (scope.entry().must_wait()) co_await scope.entry().co_wait();
  uint64_t t0 = Loop::now_ns();
  // (No co_await inside ?: here: GCC 12 mishandles the temporaries.)
  Result<void> r;
  if (is_one_driver_request(offset, iov.size())) {
    r = co_await driver_->co_preadv(offset, iov, flags);
  } else {
    r = co_await co_read_aligned(offset, iov, flags);
  }
  account_read(r.ok(), iov.size(), t0);
  co_return r;
}

// Copy-on-read, as QEMU's bdrv_co_do_copy_on_readv: the request is
// serialising over its cluster-aligned range (nothing overlapping runs
// between the read and the write back); what this node allocates is read
// into the caller's buffers directly, the rest is read whole clusters at a
// time, written back and then copied out. A failed status query counts as
// unallocated (the read will say what is wrong).
Task<Result<void>> Node::co_copy_on_read(uint64_t offset, const IoVec& iov, uint32_t flags) {
  uint64_t grain = std::max<uint64_t>(driver_->cluster_size(), limits().request_alignment);
  uint64_t chunk = std::max<uint64_t>(align_down(kMaxCopyOnRead, grain), grain);
  uint64_t start = align_down(offset, grain);
  uint64_t end =
      std::max(std::min(align_up(offset + iov.size(), grain), size()), offset + iov.size());
  RequestScope scope(*this, start, end - start, true);
  if (scope.entry().must_wait()) co_await scope.entry().co_wait();
  for (uint64_t pos = start; pos < end;) {
    auto st = co_await co_resolve_status(pos, std::min(chunk, end - pos));
    uint64_t n = st ? std::min(st->bytes, chunk) : std::min(chunk, end - pos);
    Result<void> r;
    if (st && (st->flags & kStatusAllocated)) {
      uint64_t a = std::max(pos, offset), b = std::min(pos + n, offset + iov.size());
      if (a < b) r = co_await co_read_aligned(a, iov.slice(a - offset, b - a), flags);
    } else {
      r = co_await co_copy_in(pos, n, offset, iov);
    }
    if (!r) co_return r;
    pos += n;
  }
  co_return Result<void>{};
}

// Reads [pos, pos + bytes) through the driver, writes it back unchanged and
// copies the part the caller asked for (at `offset`) into `iov`; a range
// inside the caller's buffer is read into it and written back from there.
Task<Result<void>> Node::co_copy_in(uint64_t pos, uint64_t bytes, uint64_t offset,
                                    const IoVec& iov) {
  if (pos >= offset && pos + bytes <= offset + iov.size()) {
    // Within the caller's buffer (a stream's aligned chunk): no bounce.
    IoVec part = iov.slice(pos - offset, bytes);
    STRATA_CO_TRY(co_await co_read_aligned(pos, part, 0));
    co_return co_await co_write_unchanged(pos, part);
  }
  AlignedBuffer bounce(bytes);
  STRATA_CO_TRY(co_await co_read_aligned(pos, bounce.iov(), 0));
  STRATA_CO_TRY(co_await co_write_unchanged(pos, bounce.iov()));
  uint64_t a = std::max(pos, offset), b = std::min(pos + bytes, offset + iov.size());
  if (a < b) iov.copy_from(a - offset, bounce.data() + (a - pos), b - a);
  co_return Result<void>{};
}

// A copy-on-read write: straight to the driver, as QEMU's
// bdrv_driver_pwritev (the guest-visible data does not change, so no hook
// runs and no dirty bitmap is marked); zeroes become write-zeroes.
Task<Result<void>> Node::co_write_unchanged(uint64_t pos, const IoVec& data) {
  if (data.is_zero()) co_return co_await co_do_zeroes(pos, data.size(), 0);
  uint64_t align = limits().request_alignment;
  if (pos % align || data.size() % align) co_return co_await co_write_rmw(pos, data, 0);
  co_return co_await co_write_aligned(pos, data, 0);
}

Task<Result<void>> Node::co_splice_read(uint64_t offset, uint64_t bytes, Pipe& pipe,
                                        const Child* caller) {
  while (must_wait_unquiesced(caller)) co_await co_wait_unquiesced(caller);
  if (auto r = check_request(offset, bytes, caller, false); !r) {
    stats_.invalid_rd_operations++;
    co_return r;
  }
  if (bytes == 0) co_return Result<void>{};
  if (!is_one_driver_request(offset, bytes)) {
    co_return Error{ENOTSUP, "splice read of node '" + name_ + "' needs alignment or splitting"};
  }
  RequestScope scope(*this, offset, bytes, false);
  if (scope.entry().must_wait()) co_await scope.entry().co_wait();
  uint64_t t0 = Loop::now_ns();
  auto r = co_await driver_->co_splice_read(offset, bytes, pipe);
  // A driver that cannot splice, or a pipe that filled up, leaves the read
  // to the caller's co_preadv, which counts it.
  bool fell_back = !r.ok() && (r.error().code == ENOTSUP || r.error().code == EAGAIN);
  if (!fell_back) account_read(r.ok(), bytes, t0);
  co_return r;
}

void Node::account_read(bool ok, uint64_t bytes, uint64_t start_ns) {
  uint64_t now = Loop::now_ns();
  if (ok) {
    stats_.rd_bytes += bytes;
    stats_.rd_operations++;
  } else {
    stats_.failed_rd_operations++;
  }
  stats_.rd_total_time_ns += now - start_ns;
  stats_.last_access_ns = now;
}

// Aligned writes, split by max_transfer; FUA is emulated with a flush.
Task<Result<void>> Node::co_write_aligned(uint64_t offset, const IoVec& iov, uint32_t flags) {
  Limits lim = limits();
  uint64_t chunk = lim.max_transfer
                       ? std::max<uint64_t>(align_down(lim.max_transfer, lim.request_alignment),
                                            lim.request_alignment)
                       : iov.size();
  uint32_t driver_flags = lim.supports_fua ? flags : (flags & ~kReqFua);
  for (uint64_t done = 0; done < iov.size(); done += chunk) {
    uint64_t len = std::min<uint64_t>(chunk, iov.size() - done);
    Result<void> r;
    if (len == iov.size()) {
      r = co_await driver_->co_pwritev(offset, iov, driver_flags);  // no slice to build
    } else {
      r = co_await driver_->co_pwritev(offset + done, iov.slice(done, len), driver_flags);
    }
    if (!r) co_return r;
  }
  if ((flags & kReqFua) && !lim.supports_fua) co_return co_await co_flush();
  co_return Result<void>{};
}

// Read-modify-write for a write that is not aligned for the driver. The
// request is serialising over its aligned range, so no overlapping request
// can run between the read and the write.
Task<Result<void>> Node::co_write_rmw(uint64_t offset, const IoVec& iov, uint32_t flags) {
  uint64_t align = limits().request_alignment;
  uint64_t start = align_down(offset, align);
  uint64_t end = align_up(offset + iov.size(), align);
  AlignedBuffer head, tail;
  IoVec full;
  if (start < offset) {
    head = AlignedBuffer(align);
    auto r = co_await co_read_aligned(start, head.iov(), 0);
    if (!r) co_return r;
    full.append(head.data(), offset - start);
  }
  full.append(iov);
  uint64_t data_end = offset + iov.size();
  if (end > data_end) {
    uint64_t tail_block = end - align;
    tail = AlignedBuffer(align);
    if (head.data() && tail_block == start) {
      std::memcpy(tail.data(), head.data(), align);
    } else {
      auto r = co_await co_read_aligned(tail_block, tail.iov(), 0);
      if (!r) co_return r;
    }
    full.append(tail.data() + (data_end - tail_block), end - data_end);
  }
  co_return co_await co_write_aligned(start, full, flags);
}

Task<Result<void>> Node::co_do_write(uint64_t offset, const IoVec& iov, uint32_t flags,
                                     const Child* caller) {
  Limits lim = limits();
  uint64_t align = lim.request_alignment;
  bool unaligned = offset % align || iov.size() % align;
  uint64_t start = align_down(offset, align);
  uint64_t end = align_up(offset + iov.size(), align);
  bool serialise = unaligned || lim.serialize_overlapping_writes || (flags & kReqSerialising);
  flags &= ~kReqSerialising;
  RequestScope scope(*this, start, end - start, serialise);
  if (scope.entry().must_wait()) co_await scope.entry().co_wait();
  check_write_threshold(start, end - start);  // QEMU checks the padded request
  if (unaligned) co_return co_await co_write_rmw(offset, iov, flags);
  co_return co_await co_write_aligned(offset, iov, flags);
}

void Node::mark_written(uint64_t offset, uint64_t bytes, const Child* caller) {
  if (bitmaps_) bitmaps_->mark(offset, bytes, caller);
}

void Node::check_write_threshold(uint64_t offset, uint64_t bytes) {
  if (write_threshold_ == 0) return;
  auto event = write_threshold_exceeded(name_, write_threshold_, offset, bytes);
  if (!event) return;
  write_threshold_ = 0;  // one shot: the user arms it again
  engine_.graph().write_threshold_listeners().notify(*event);
}

// An unaligned write-zeroes is checked as QEMU writes it: one padded write
// when it covers one or two blocks, else the head block, the aligned middle
// and the tail block in turn (the first piece that passes the threshold
// decides amount-exceeded).
void Node::check_zeroes_threshold(uint64_t offset, uint64_t bytes) {
  uint64_t align = limits().request_alignment;
  uint64_t start = align_down(offset, align);
  uint64_t end = align_up(offset + bytes, align);
  bool head = start != offset;
  bool tail = end != offset + bytes;
  uint64_t merged = (end - start > align && head && tail) ? 2 * align : align;
  if (!head && !tail) {
    check_write_threshold(offset, bytes);
  } else if (end - start == merged) {
    check_write_threshold(start, merged);
  } else {
    uint64_t mid_start = head ? start + align : start;
    uint64_t mid_end = align_down(offset + bytes, align);
    if (head) check_write_threshold(start, align);
    if (mid_end > mid_start) check_write_threshold(mid_start, mid_end - mid_start);
    if (tail) check_write_threshold(end - align, align);
  }
}

Task<Result<void>> Node::co_pwritev(uint64_t offset, const IoVec& iov, uint32_t flags,
                                    const Child* caller) {
  while (must_wait_unquiesced(caller)) co_await co_wait_unquiesced(caller);
  if (auto r = check_request(offset, iov.size(), caller, true); !r) {
    stats_.invalid_wr_operations++;
    co_return r;
  }
  if (iov.size() == 0) co_return Result<void>{};
  if (flags_.detect_zeroes != DetectZeroes::kOff && iov.is_zero()) {
    // QEMU checks the padded write before it finds the zeroes.
    uint64_t align = limits().request_alignment;
    uint64_t start = align_down(offset, align);
    check_write_threshold(start, align_up(offset + iov.size(), align) - start);
    uint32_t zflags = flags & (kReqFua | kReqSerialising);
    if (flags_.detect_zeroes == DetectZeroes::kUnmap) zflags |= kReqMayUnmap;
    co_return co_await co_pwrite_zeroes(offset, iov.size(), zflags, nullptr);
  }
  uint64_t t0 = Loop::now_ns();
  auto r = co_await co_do_write(offset, iov, flags, caller);
  uint64_t t1 = Loop::now_ns();
  if (r) {
    stats_.wr_bytes += iov.size();
    stats_.wr_operations++;
    stats_.wr_highest_offset = std::max(stats_.wr_highest_offset, offset + iov.size());
    mark_written(offset, iov.size(), caller);
  } else {
    stats_.failed_wr_operations++;
  }
  stats_.wr_total_time_ns += t1 - t0;
  stats_.last_access_ns = t1;
  co_return r;
}

// Write-zeroes by writing zero buffers (the driver cannot do better).
Task<Result<void>> Node::co_zeroes_by_writing(uint64_t offset, uint64_t bytes, uint32_t flags) {
  AlignedBuffer zeroes(std::min(bytes, kZeroChunk));
  std::memset(zeroes.data(), 0, zeroes.size());
  for (uint64_t done = 0; done < bytes;) {
    uint64_t len = std::min<uint64_t>(zeroes.size(), bytes - done);
    IoVec iov(zeroes.data(), len);
    Result<void> r;
    if ((offset + done) % limits().request_alignment || len % limits().request_alignment) {
      // Only the head or tail of an unaligned request gets here; the
      // request is already serialising.
      r = co_await co_write_rmw(offset + done, iov, flags);
    } else {
      r = co_await co_write_aligned(offset + done, iov, flags);
    }
    if (!r) co_return r;
    done += len;
  }
  co_return Result<void>{};
}

// Write-zeroes on an aligned range: ask the driver, fall back to writing.
Task<Result<void>> Node::co_zeroes_aligned(uint64_t offset, uint64_t bytes, uint32_t flags) {
  Limits lim = limits();
  uint64_t chunk = lim.max_zeroes
                       ? std::max<uint64_t>(align_down(lim.max_zeroes, lim.zeroes_alignment),
                                            lim.zeroes_alignment)
                       : bytes;
  for (uint64_t done = 0; done < bytes;) {
    uint64_t len = std::min(chunk, bytes - done);
    auto r = co_await driver_->co_pwrite_zeroes(offset + done, len, flags & ~kReqFua);
    if (!r && r.error().code == ENOTSUP && !(flags & kReqNoFallback)) {
      r = co_await co_zeroes_by_writing(offset + done, len, flags & ~(kReqFua | kReqMayUnmap));
    }
    if (!r) co_return r;
    done += len;
  }
  co_return Result<void>{};
}

// The unaligned head or tail of a write-zeroes request: offered to the
// driver first when it asks for that, else (or on ENOTSUP) written.
Task<Result<void>> Node::co_zeroes_unaligned(uint64_t offset, uint64_t bytes, uint32_t flags) {
  if (limits().try_unaligned_zeroes) {
    auto r = co_await driver_->co_pwrite_zeroes(offset, bytes, flags & ~kReqFua);
    if (r || r.error().code != ENOTSUP) co_return r;
  }
  if (flags & kReqNoFallback) co_return Error{ENOTSUP, "unaligned fast zero"};
  co_return co_await co_zeroes_by_writing(offset, bytes, flags & ~kReqMayUnmap);
}

Task<Result<void>> Node::co_do_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) {
  uint64_t zalign = limits().zeroes_alignment;
  uint64_t end = offset + bytes;
  uint64_t mid_start = std::min(align_up(offset, zalign), end);
  uint64_t mid_end = std::max(align_down(end, zalign), mid_start);
  if (mid_start > offset) {
    auto r = co_await co_zeroes_unaligned(offset, mid_start - offset, flags);
    if (!r) co_return r;
  }
  if (mid_end > mid_start) {
    auto r = co_await co_zeroes_aligned(mid_start, mid_end - mid_start, flags);
    if (!r) co_return r;
  }
  if (end > mid_end) {
    auto r = co_await co_zeroes_unaligned(mid_end, end - mid_end, flags);
    if (!r) co_return r;
  }
  if (flags & kReqFua) co_return co_await co_flush();
  co_return Result<void>{};
}

Task<Result<void>> Node::co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags,
                                          const Child* caller) {
  while (must_wait_unquiesced(caller)) co_await co_wait_unquiesced(caller);
  if (auto r = check_request(offset, bytes, caller, true); !r) {
    stats_.invalid_wr_operations++;
    co_return r;
  }
  if (bytes == 0) co_return Result<void>{};
  if (!flags_.discard_unmap) flags &= ~kReqMayUnmap;
  uint64_t align = limits().request_alignment;
  uint64_t start = align_down(offset, align);
  uint64_t end = align_up(offset + bytes, align);
  bool serialise = start != offset || end != offset + bytes ||
                   limits().serialize_overlapping_writes || (flags & kReqSerialising);
  flags &= ~kReqSerialising;
  RequestScope scope(*this, start, end - start, serialise);
  if (scope.entry().must_wait()) co_await scope.entry().co_wait();
  check_zeroes_threshold(offset, bytes);
  uint64_t t0 = Loop::now_ns();
  auto r = co_await co_do_zeroes(offset, bytes, flags);
  uint64_t t1 = Loop::now_ns();
  if (r) {
    stats_.zero_operations++;
    stats_.zero_bytes += bytes;
    stats_.wr_highest_offset = std::max(stats_.wr_highest_offset, offset + bytes);
    mark_written(offset, bytes, caller);
  } else if (!(flags & kReqNoFallback) || r.error().code != ENOTSUP) {
    stats_.failed_wr_operations++;
  }
  stats_.wr_total_time_ns += t1 - t0;
  stats_.last_access_ns = t1;
  co_return r;
}

Task<Result<void>> Node::co_pdiscard(uint64_t offset, uint64_t bytes, const Child* caller) {
  while (must_wait_unquiesced(caller)) co_await co_wait_unquiesced(caller);
  if (auto r = check_request(offset, bytes, caller, true); !r) {
    stats_.invalid_unmap_operations++;
    co_return r;
  }
  if (bytes == 0 || !flags_.discard_unmap) co_return Result<void>{};
  Limits lim = limits();
  // Discard is advisory: only whole aligned blocks are passed on.
  uint64_t start = align_up(offset, lim.discard_alignment);
  uint64_t end = align_down(offset + bytes, lim.discard_alignment);
  RequestScope scope(*this, offset, bytes, lim.serialize_overlapping_writes);
  if (scope.entry().must_wait()) co_await scope.entry().co_wait();
  check_write_threshold(offset, bytes);  // the whole discard, as QEMU
  uint64_t t0 = Loop::now_ns();
  Result<void> r;
  uint64_t chunk = lim.max_discard
                       ? std::max<uint64_t>(align_down(lim.max_discard, lim.discard_alignment),
                                            lim.discard_alignment)
                       : (end > start ? end - start : 0);
  for (uint64_t pos = start; r && pos < end; pos += chunk) {
    r = co_await driver_->co_pdiscard(pos, std::min(chunk, end - pos));
  }
  uint64_t t1 = Loop::now_ns();
  if (r) {
    stats_.unmap_operations++;
    stats_.unmap_bytes += bytes;
    mark_written(offset, bytes, caller);
  } else {
    stats_.failed_unmap_operations++;
  }
  stats_.unmap_total_time_ns += t1 - t0;
  stats_.last_access_ns = t1;
  co_return r;
}

Task<Result<void>> Node::co_flush(const Child* caller) {
  while (must_wait_unquiesced(caller)) co_await co_wait_unquiesced(caller);
  RequestScope scope(*this, 0, 0, false);
  uint64_t t0 = Loop::now_ns();
  Result<void> r;
  if (!flags_.cache_no_flush) r = co_await driver_->co_flush();
  // Then everything below that this node writes to.
  for (const auto& c : children_) {
    if (!r) break;
    if (c->perm() & (kPermWrite | kPermWriteUnchanged)) r = co_await c->node()->co_flush(nullptr);
  }
  uint64_t t1 = Loop::now_ns();
  if (r) {
    stats_.flush_operations++;
  } else {
    stats_.failed_flush_operations++;
  }
  stats_.flush_total_time_ns += t1 - t0;
  stats_.last_access_ns = t1;
  co_return r;
}

Task<Result<BlockStatus>> Node::co_resolve_status(uint64_t offset, uint64_t bytes) {
  auto st = co_await driver_->co_block_status(offset, bytes);
  if (!st) co_return st;
  if (st->bytes == 0)
    co_return Error{EIO, "driver '" + driver_name_ + "' returned an empty extent"};
  st->bytes = std::min(st->bytes, bytes);
  if ((st->flags & kStatusRecurse) && st->map_node) {
    Node* below = st->map_node;
    auto inner = co_await below->co_block_status(st->map_offset, st->bytes, nullptr);
    if (!inner) co_return inner;
    inner->bytes = std::min(inner->bytes, st->bytes);
    inner->flags &= ~kStatusEof;
    st = inner;
  } else if ((st->flags & kStatusZeroFromMap) && st->map_node) {
    // Extra information only: an error below leaves the answer as it was.
    auto below = co_await st->map_node->co_block_status(st->map_offset, st->bytes, nullptr);
    if (below && (below->flags & kStatusEof) &&
        (below->bytes == 0 || (below->flags & kStatusZero))) {
      st->flags |= kStatusZero;
    } else if (below && below->bytes) {
      st->bytes = std::min(st->bytes, below->bytes);
      st->flags |= below->flags & kStatusZero;
    }
  }
  st->flags &= ~kStatusZeroFromMap;
  if (st->flags & (kStatusData | kStatusZero)) st->flags |= kStatusAllocated;
  if (!(st->flags & kStatusAllocated) && driver_->supports_backing() && !backing()) {
    st->flags |= kStatusZero;
  }
  st->depth = (st->flags & kStatusAllocated) ? 1 : 0;
  co_return st;
}

Task<Result<BlockStatus>> Node::co_block_status(uint64_t offset, uint64_t bytes,
                                                const Child* caller) {
  while (must_wait_unquiesced(caller)) co_await co_wait_unquiesced(caller);
  uint64_t total = size();
  if (offset > total) co_return Error{EINVAL, "block status offset past the end"};
  if (offset == total || bytes == 0) {
    BlockStatus eof;
    eof.flags = kStatusEof;
    co_return eof;
  }
  bytes = std::min(bytes, total - offset);
  RequestScope scope(*this, offset, bytes, false);
  auto st = co_await co_resolve_status(offset, bytes);
  if (st && offset + st->bytes >= total) st->flags |= kStatusEof;
  co_return st;
}

Task<Result<void>> Node::co_truncate(uint64_t new_size, bool exact, Preallocation prealloc,
                                     const Child* caller) {
  while (must_wait_unquiesced(caller)) co_await co_wait_unquiesced(caller);
  if (read_only()) co_return Error{EPERM, "Block node '" + name_ + "' is read-only"};
  if (caller && !(caller->perm() & kPermResize)) {
    co_return Error{EPERM, "Permission denied: '" + caller->user() + "' has not taken resize on '" +
                               name_ + "'"};
  }
  RequestScope scope(*this, std::min(new_size, size()), UINT64_MAX / 4, true);
  if (scope.entry().must_wait()) co_await scope.entry().co_wait();
  auto r = co_await driver_->co_truncate(new_size, exact, prealloc);
  if (r && bitmaps_) bitmaps_->on_resize(size());
  co_return r;
}

}  // namespace strata
