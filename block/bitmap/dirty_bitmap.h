// DirtyBitmap and BitmapSet: change-block tracking attached to a node.
//
// Contract: a BitmapSet belongs to one Node (Node::bitmaps()) and owns its
// bitmaps. The node's dispatcher calls mark() after every successful write,
// write-zeroes and discard, which marks every recording bitmap (but one that
// screens out the edge the write came through, see set_unrecorded_writer);
// the node tells it about resizes (on_resize), and every bitmap follows. A
// DirtyBitmap has QEMU's state: a name (empty for the anonymous successors
// that jobs use), a granularity, `enabled` (records writes), busy (a job or
// an export uses it), persistent (stored in the image), read-only
// (persistent bitmap of a read-only image) and inconsistent (found in-use on
// disk: no data, only removal allowed). Successors follow QEMU's
// bdrv_dirty_bitmap_create_successor / abdicate / reclaim: a job freezes a
// bitmap by giving it an anonymous successor that records the writes in its
// place; on completion the successor either takes over the name (abdicate) or
// is merged back (reclaim). check() answers QEMU's bdrv_dirty_bitmap_check
// with its exact messages; the QMP-level operations are in bitmap_ops.h.
// Thread rules: loop-thread only (the thread of the owning node's engine).
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "block/bitmap/hbitmap.h"
#include "strata/result.h"

namespace strata {

class Child;
class Node;
class BitmapSet;
class BitmapStore;

// QEMU's BDRV_BITMAP_* check flags.
enum BitmapCheck : unsigned {
  kBitmapBusy = 1u << 0,
  kBitmapReadOnly = 1u << 1,
  kBitmapInconsistent = 1u << 2,
  kBitmapDefault = kBitmapBusy | kBitmapReadOnly | kBitmapInconsistent,
  kBitmapAllowRo = kBitmapBusy | kBitmapInconsistent,
};

constexpr size_t kBitmapMaxNameSize = 1023;
constexpr uint64_t kBitmapMinGranularity = 512;

class DirtyBitmap {
 public:
  DirtyBitmap(BitmapSet& set, std::string name, uint64_t size, uint32_t granularity_bits);
  DirtyBitmap(const DirtyBitmap&) = delete;
  DirtyBitmap& operator=(const DirtyBitmap&) = delete;

  BitmapSet& set() const { return *set_; }
  Node& node() const;
  const std::string& name() const { return name_; }
  bool anonymous() const { return name_.empty(); }
  uint64_t granularity() const { return bits_.granularity(); }
  uint64_t size() const { return bits_.size(); }
  // Dirty bytes as QEMU counts them (whole granules).
  uint64_t count() const { return bits_.count_bytes(); }
  // Mutable access tells the set, whose write-path summary may no longer
  // hold (see BitmapSet::mark); keep the reference only for the call.
  HBitmap& bits();
  const HBitmap& bits() const { return bits_; }

  bool enabled() const { return enabled_; }
  void set_enabled(bool on);
  // Enabled, or frozen with an enabled successor (QEMU's "recording").
  bool recording() const;
  bool busy() const { return busy_; }
  void set_busy(bool on) { busy_ = on; }
  bool persistent() const { return persistent_; }
  void set_persistent(bool on) { persistent_ = on; }
  bool read_only() const { return read_only_; }
  void set_read_only(bool on) { read_only_ = on; }
  bool inconsistent() const { return inconsistent_; }
  // Marks the bitmap inconsistent: disabled, no data (a bitmap found in-use
  // on disk).
  void set_inconsistent();
  DirtyBitmap* successor() const { return successor_; }
  // Writes that reach the node through `edge` do not mark the bitmap: its
  // owner marks what it must of them itself (a mirror in write-blocking
  // mode, whose filter sends the guest's writes to the target too). Writes
  // through any other edge still do. Null: every write marks it.
  void set_unrecorded_writer(const Child* edge);
  const Child* unrecorded_writer() const { return unrecorded_writer_; }

  // QEMU's bdrv_dirty_bitmap_check: the first failing condition of `flags`.
  Result<void> check(unsigned flags) const;
  // BlockDirtyInfo for query-named-block-nodes / query-block.
  nlohmann::json query_info() const;

 private:
  friend class BitmapSet;
  BitmapSet* set_;
  std::string name_;
  HBitmap bits_;
  bool enabled_ = true;
  bool busy_ = false;
  bool persistent_ = false;
  bool read_only_ = false;
  bool inconsistent_ = false;
  DirtyBitmap* successor_ = nullptr;
  const Child* unrecorded_writer_ = nullptr;
};

class BitmapSet {
 public:
  explicit BitmapSet(Node& node);
  ~BitmapSet();
  BitmapSet(const BitmapSet&) = delete;
  BitmapSet& operator=(const BitmapSet&) = delete;

  Node& node() const { return node_; }
  // Named bitmap, or null.
  DirtyBitmap* find(std::string_view name) const;
  // All bitmaps (anonymous ones included), oldest first.
  std::vector<DirtyBitmap*> all() const;
  bool empty() const { return bitmaps_.empty(); }

  // QEMU's bdrv_create_dirty_bitmap: a new, empty, enabled bitmap covering
  // the node. An empty name makes an anonymous bitmap. `granularity` must be
  // a power of two (callers validate user input first).
  Result<DirtyBitmap*> create(uint64_t granularity, const std::string& name);
  // Drops a bitmap (and its successor, if any).
  void release(DirtyBitmap* bitmap);

  // Successors (see the contract).
  Result<DirtyBitmap*> create_successor(DirtyBitmap& bitmap);
  Result<DirtyBitmap*> abdicate(DirtyBitmap& bitmap);
  Result<DirtyBitmap*> reclaim(DirtyBitmap& bitmap);

  // Marks every recording bitmap. The dispatcher calls it directly after
  // each successful write, write-zeroes and discard of the node that came
  // through `via` (null: from no edge).
  void mark(uint64_t offset, uint64_t bytes, const Child* via = nullptr) {
    if (bytes == 0) return;
    if (!screened_.empty()) mark_screened(offset, bytes, via);
    if (recording_.empty()) return;
    if (groups_.size() == 1 && !groups_stale_ && known_dirty(groups_.front(), offset, bytes))
      return;
    mark_recording(offset, bytes);
  }
  // Bits of some bitmap may have been cleared, or bitmaps changed: drops
  // what mark() remembers.
  void invalidate_marks() { groups_stale_ = true; }
  // The node's size changed: every bitmap follows.
  void on_resize(uint64_t new_size);
  // BlockDirtyInfo list, newest first as QEMU lists it.
  nlohmann::json query_info() const;

  // Where the node's format keeps persistent bitmaps (installed by the
  // driver at open, see bitmap_store.h), or null.
  BitmapStore* store() const { return store_.get(); }
  void set_store(std::unique_ptr<BitmapStore> store);

 private:
  friend class DirtyBitmap;
  // Rebuilds recording_ after a bitmap was added, removed, enabled or
  // disabled.
  void refresh_recording();

  // The recording bitmaps of one granularity, recording_[begin, end), and
  // what mark() knows about them: a direct-mapped cache of bottom words
  // (slot word % kKnownSlots holds {word + 1, granules dirty in all of
  // them}), so that with several bitmaps a write to granules already dirty
  // everywhere costs one load however many bitmaps there are. Only groups
  // of two or more bitmaps keep one; any clearing of bits, resize or change
  // of the recording set drops it (invalidate_marks).
  struct MarkGroup {
    uint32_t gran_bits = 0;
    size_t begin = 0, end = 0;
    uint64_t size = 0;  // the smallest size of the group's bitmaps
    std::vector<std::pair<uint64_t, uint64_t>> known;
  };
  static constexpr uint64_t kKnownSlots = 512;
  // Inline fast path of mark(): true when [offset, offset + bytes) lies in
  // one bottom word and is already dirty in every bitmap of `g` (by the
  // group's summary, or by its only bitmap's word).
  bool known_dirty(const MarkGroup& g, uint64_t offset, uint64_t bytes) const {
    uint64_t end = offset + bytes;
    uint64_t first = offset >> g.gran_bits;
    uint64_t last = (end - 1) >> g.gran_bits;
    uint64_t word = first / 64;
    if (end < offset || end > g.size || last / 64 != word) return false;
    uint64_t mask = (~uint64_t{0} >> (63 - last % 64)) & (~uint64_t{0} << (first % 64));
    if (g.known.empty())
      return g.end - g.begin == 1 && recording_[g.begin]->word_all_set(word, mask);
    const auto& slot = g.known[word % kKnownSlots];
    return slot.first == word + 1 && (slot.second & mask) == mask;
  }
  void rebuild_groups();
  void mark_recording(uint64_t offset, uint64_t bytes);
  void mark_group(MarkGroup& g, uint64_t offset, uint64_t bytes);
  void mark_screened(uint64_t offset, uint64_t bytes, const Child* via);

  Node& node_;
  std::vector<std::unique_ptr<DirtyBitmap>> bitmaps_;
  // The bits of every enabled bitmap: what mark() walks on each write.
  std::vector<HBitmap*> recording_;
  // Enabled bitmaps with an unrecorded writer, marked apart (rare: jobs).
  std::vector<DirtyBitmap*> screened_;
  std::vector<MarkGroup> groups_;
  bool groups_stale_ = true;
  std::unique_ptr<BitmapStore> store_;
};

inline HBitmap& DirtyBitmap::bits() {
  set_->invalidate_marks();
  return bits_;
}

// QEMU's default granularity for a node's bitmaps: its cluster size clamped
// to [4 KiB, 64 KiB], or 64 KiB when the format has no clusters.
uint64_t default_bitmap_granularity(uint64_t cluster_size);
uint64_t default_bitmap_granularity(const Node& node);

// QEMU's bitmap-mode for jobs that sync from a bitmap (backup).
enum class BitmapSyncMode { kOnSuccess, kNever, kAlways };

// Start of a job using `bitmap`: checks it (DEFAULT, or ALLOW_RO for
// `never`) and freezes it with a successor.
Result<void> begin_sync_bitmap(DirtyBitmap& bitmap, BitmapSyncMode mode);
// End of that job (QEMU's backup_cleanup_sync_bitmap): abdicate when the job
// succeeded or the mode is `always` (and not `never`), otherwise reclaim;
// after a failure in `always` mode, `not_copied` (may be null) is merged in.
// Returns the bitmap that now carries the name.
DirtyBitmap* finish_sync_bitmap(DirtyBitmap& bitmap, BitmapSyncMode mode, bool success,
                                const HBitmap* not_copied);

}  // namespace strata
