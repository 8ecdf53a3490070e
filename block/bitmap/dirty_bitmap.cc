// DirtyBitmap and BitmapSet; see dirty_bitmap.h for the contract.
#include "block/bitmap/dirty_bitmap.h"

#include <algorithm>
#include <bit>
#include <cerrno>

#include "block/bitmap/bitmap_store.h"
#include "block/core/node.h"

namespace strata {

// DirtyBitmap

DirtyBitmap::DirtyBitmap(BitmapSet& set, std::string name, uint64_t size, uint32_t granularity_bits)
    : set_(&set), name_(std::move(name)), bits_(size, granularity_bits) {}

Node& DirtyBitmap::node() const {
  return set_->node();
}

void DirtyBitmap::set_enabled(bool on) {
  enabled_ = on;
  set_->refresh_recording();
}

void DirtyBitmap::set_unrecorded_writer(const Child* edge) {
  unrecorded_writer_ = edge;
  set_->refresh_recording();
}

bool DirtyBitmap::recording() const {
  return enabled_ || (successor_ != nullptr && successor_->enabled_);
}

void DirtyBitmap::set_inconsistent() {
  inconsistent_ = true;
  set_enabled(false);
  bits_.reset_all();
  set_->invalidate_marks();
}

Result<void> DirtyBitmap::check(unsigned flags) const {
  if ((flags & kBitmapBusy) && busy_) {
    return Error{EBUSY, "Bitmap '" + name_ +
                            "' is currently in use by another operation and cannot be used"};
  }
  if ((flags & kBitmapReadOnly) && read_only_) {
    return Error{EPERM, "Bitmap '" + name_ + "' is readonly and cannot be modified"};
  }
  if ((flags & kBitmapInconsistent) && inconsistent_) {
    // QEMU adds the hint "Try block-dirty-bitmap-remove to delete this
    // bitmap from disk", which QMP does not send.
    return Error{EINVAL, "Bitmap '" + name_ + "' is inconsistent and cannot be used"};
  }
  return {};
}

nlohmann::json DirtyBitmap::query_info() const {
  nlohmann::json info = nlohmann::json::object();
  if (!anonymous()) info["name"] = name_;
  info["recording"] = recording();
  info["persistent"] = persistent_;
  info["busy"] = busy_;
  info["granularity"] = granularity();
  info["count"] = count();
  if (inconsistent_) info["inconsistent"] = true;
  return info;
}

// BitmapSet

BitmapSet::BitmapSet(Node& node) : node_(node) {}

BitmapSet::~BitmapSet() = default;

void BitmapSet::set_store(std::unique_ptr<BitmapStore> store) {
  store_ = std::move(store);
}

DirtyBitmap* BitmapSet::find(std::string_view name) const {
  if (name.empty()) return nullptr;
  for (const auto& b : bitmaps_) {
    if (b->name_ == name) return b.get();
  }
  return nullptr;
}

std::vector<DirtyBitmap*> BitmapSet::all() const {
  std::vector<DirtyBitmap*> out;
  for (const auto& b : bitmaps_) out.push_back(b.get());
  return out;
}

Result<DirtyBitmap*> BitmapSet::create(uint64_t granularity, const std::string& name) {
  if (!name.empty()) {
    if (find(name)) return Error{EEXIST, "Bitmap already exists: " + name};
    if (name.size() > kBitmapMaxNameSize) return Error{EINVAL, "Bitmap name too long: " + name};
  }
  if (granularity == 0 || !std::has_single_bit(granularity)) {
    return Error{EINVAL, "Granularity must be power of 2 and at least 512"};
  }
  uint32_t bits = std::countr_zero(granularity);
  bitmaps_.push_back(std::make_unique<DirtyBitmap>(*this, name, node_.size(), bits));
  refresh_recording();
  return bitmaps_.back().get();
}

void BitmapSet::release(DirtyBitmap* bitmap) {
  if (!bitmap) return;
  DirtyBitmap* successor = bitmap->successor_;
  std::erase_if(bitmaps_, [bitmap](const auto& b) { return b.get() == bitmap; });
  refresh_recording();
  // A successor nobody reclaims goes with its parent.
  if (successor) release(successor);
}

Result<DirtyBitmap*> BitmapSet::create_successor(DirtyBitmap& bitmap) {
  STRATA_TRY(bitmap.check(kBitmapBusy));
  if (bitmap.successor_) {
    return Error{EINVAL, "Cannot create a successor for a bitmap that already has one"};
  }
  STRATA_TRY_ASSIGN(DirtyBitmap * child, create(bitmap.granularity(), ""));
  // The successor records if the parent did; the parent is frozen.
  child->enabled_ = bitmap.enabled_;
  bitmap.enabled_ = false;
  bitmap.successor_ = child;
  bitmap.busy_ = true;
  refresh_recording();
  return child;
}

Result<DirtyBitmap*> BitmapSet::abdicate(DirtyBitmap& bitmap) {
  DirtyBitmap* successor = bitmap.successor_;
  if (!successor) return Error{EINVAL, "Cannot relinquish control if there's no successor present"};
  successor->name_ = std::move(bitmap.name_);
  successor->persistent_ = bitmap.persistent_;
  bitmap.successor_ = nullptr;
  release(&bitmap);
  return successor;
}

Result<DirtyBitmap*> BitmapSet::reclaim(DirtyBitmap& bitmap) {
  DirtyBitmap* successor = bitmap.successor_;
  if (!successor) return Error{EINVAL, "Cannot reclaim a successor when none is present"};
  bitmap.bits_.merge(successor->bits_);
  bitmap.enabled_ = successor->enabled_;  // refreshed by release()
  bitmap.busy_ = false;
  bitmap.successor_ = nullptr;
  release(successor);
  return &bitmap;
}

// One call per write for all bitmaps. recording_ is grouped by granularity,
// so the granule word and mask are computed once per group; a group whose
// summary knows the granules are dirty in all its bitmaps costs one load,
// otherwise a bitmap whose granules are already dirty costs one load and
// compare.
void BitmapSet::mark_recording(uint64_t offset, uint64_t bytes) {
  if (groups_stale_) rebuild_groups();
  for (MarkGroup& g : groups_) mark_group(g, offset, bytes);
}

void BitmapSet::mark_screened(uint64_t offset, uint64_t bytes, const Child* via) {
  for (DirtyBitmap* b : screened_) {
    if (b->unrecorded_writer_ != via) b->bits_.set(offset, bytes);
  }
}

void BitmapSet::mark_group(MarkGroup& g, uint64_t offset, uint64_t bytes) {
  uint64_t end = offset + bytes;
  uint64_t first = offset >> g.gran_bits;
  uint64_t last = (end - 1) >> g.gran_bits;
  uint64_t word = first / 64;
  if (end < offset || end > g.size || last / 64 != word) {
    // Several bottom words, or a range HBitmap::set clamps: the slow path.
    for (size_t i = g.begin; i < g.end; i++) recording_[i]->set(offset, bytes);
    return;
  }
  uint64_t mask = (~uint64_t{0} >> (63 - last % 64)) & (~uint64_t{0} << (first % 64));
  std::pair<uint64_t, uint64_t>* slot = nullptr;
  if (!g.known.empty()) {
    slot = &g.known[word % kKnownSlots];
    if (slot->first != word + 1) {
      *slot = {word + 1, 0};
    } else if ((slot->second & mask) == mask) {
      return;
    }
  }
  for (size_t i = g.begin; i < g.end; i++) {
    HBitmap* bits = recording_[i];
    if (!bits->word_all_set(word, mask)) bits->set(offset, bytes);
  }
  // Every bitmap of the group now has these granules dirty.
  if (slot) slot->second |= mask;
}

void BitmapSet::rebuild_groups() {
  groups_.clear();
  for (size_t i = 0; i < recording_.size(); i++) {
    const HBitmap* bits = recording_[i];
    if (groups_.empty() || groups_.back().gran_bits != bits->granularity_bits()) {
      groups_.push_back({bits->granularity_bits(), i, i, bits->size(), {}});
    }
    MarkGroup& g = groups_.back();
    g.end = i + 1;
    g.size = std::min(g.size, bits->size());
  }
  for (MarkGroup& g : groups_) {
    if (g.end - g.begin >= 2) g.known.assign(kKnownSlots, {0, 0});
  }
  groups_stale_ = false;
}

void BitmapSet::refresh_recording() {
  recording_.clear();
  screened_.clear();
  for (const auto& b : bitmaps_) {
    if (!b->enabled_) continue;
    if (b->unrecorded_writer_) {
      screened_.push_back(b.get());
    } else {
      recording_.push_back(&b->bits_);
    }
  }
  std::stable_sort(recording_.begin(), recording_.end(), [](const HBitmap* a, const HBitmap* b) {
    return a->granularity_bits() < b->granularity_bits();
  });
  invalidate_marks();
}

void BitmapSet::on_resize(uint64_t new_size) {
  for (const auto& b : bitmaps_) b->bits_.truncate(new_size);
  invalidate_marks();
}

nlohmann::json BitmapSet::query_info() const {
  nlohmann::json list = nlohmann::json::array();
  for (auto it = bitmaps_.rbegin(); it != bitmaps_.rend(); ++it)
    list.push_back((*it)->query_info());
  return list;
}

// Free functions

uint64_t default_bitmap_granularity(uint64_t cluster_size) {
  if (cluster_size == 0) return 65536;
  return std::clamp<uint64_t>(cluster_size, 4096, 65536);
}

uint64_t default_bitmap_granularity(const Node& node) {
  return default_bitmap_granularity(node.driver().cluster_size());
}

Result<void> begin_sync_bitmap(DirtyBitmap& bitmap, BitmapSyncMode mode) {
  STRATA_TRY(bitmap.check(mode == BitmapSyncMode::kNever ? kBitmapAllowRo : kBitmapDefault));
  STRATA_TRY(bitmap.set().create_successor(bitmap));
  return {};
}

DirtyBitmap* finish_sync_bitmap(DirtyBitmap& bitmap, BitmapSyncMode mode, bool success,
                                const HBitmap* not_copied) {
  bool sync = (success || mode == BitmapSyncMode::kAlways) && mode != BitmapSyncMode::kNever;
  BitmapSet& set = bitmap.set();
  auto result = sync ? set.abdicate(bitmap) : set.reclaim(bitmap);
  if (!result) return &bitmap;  // no successor: nothing was frozen
  DirtyBitmap* named = *result;
  if (!success && mode == BitmapSyncMode::kAlways && not_copied) named->bits().merge(*not_copied);
  return named;
}

}  // namespace strata
