// BitmapStore: what a format driver that keeps dirty bitmaps in its image
// (qcow2) offers the bitmap layer. The driver installs one in the node's
// BitmapSet when it opens (BitmapSet::set_store); the bitmap layer finds it
// with bitmap_store_of().
//
// Contract: the driver loads its persistent bitmaps into the node's
// BitmapSet when it opens (read-only image: bitmaps read-only; found in-use:
// inconsistent) and stores the persistent, writable, consistent ones when it
// closes (co_store_bitmaps). co_can_store_new_bitmap() answers QEMU's
// bdrv_co_can_store_new_dirty_bitmap with its messages;
// co_remove_persistent_bitmap() deletes a bitmap from the image now (a name
// the image does not hold is not an error).
// Thread rules: loop-thread only.
#pragma once

#include <cstdint>
#include <string>

#include "block/bitmap/dirty_bitmap.h"
#include "block/core/node.h"
#include "strata/result.h"
#include "strata/task.h"

namespace strata {

class BitmapStore {
 public:
  virtual ~BitmapStore() = default;
  virtual Task<Result<void>> co_can_store_new_bitmap(const std::string& name,
                                                     uint64_t granularity) = 0;
  virtual Task<Result<void>> co_remove_persistent_bitmap(const std::string& name) = 0;
  virtual Task<Result<void>> co_store_bitmaps() = 0;
  // QEMU's bdrv_supports_persistent_dirty_bitmap (qcow2: v3 only).
  virtual bool supports_persistent() const = 0;
};

// The store of the node's format, or null if it cannot store bitmaps.
inline BitmapStore* bitmap_store_of(const Node& node) {
  BitmapSet* set = node.bitmaps_if_any();
  return set ? set->store() : nullptr;
}

}  // namespace strata
