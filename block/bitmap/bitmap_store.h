// BitmapStore: what a format driver that keeps dirty bitmaps in its image
// (qcow2) offers the bitmap layer. A driver implements it next to Driver;
// the bitmap layer finds it with bitmap_store_of().
//
// Contract: the driver loads its persistent bitmaps into the node's
// BitmapSet when it opens (read-only image: bitmaps read-only; found in-use:
// inconsistent) and stores the persistent, non-skipped ones when it closes
// or becomes read-only. co_can_store_new_bitmap() answers QEMU's
// bdrv_co_can_store_new_dirty_bitmap with its messages;
// co_remove_persistent_bitmap() deletes a bitmap from the image now.
// Thread rules: loop-thread only.
#pragma once

#include <cstdint>
#include <string>

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
};

// The node's driver as a BitmapStore, or null if its format cannot store
// bitmaps.
inline BitmapStore* bitmap_store_of(const Node& node) {
  return dynamic_cast<BitmapStore*>(&node.driver());
}

}  // namespace strata
