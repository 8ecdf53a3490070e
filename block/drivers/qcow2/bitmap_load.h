// Loading a qcow2 node's persistent dirty bitmaps into its BitmapSet (QEMU's
// qcow2_load_dirty_bitmaps).
//
// Contract: without a bitmaps extension, or with the autoclear bit 0 clear
// (a bitmap-unaware program wrote the image), nothing is loaded. Otherwise
// every directory entry becomes a persistent, read-only bitmap of the node,
// enabled when its `auto` flag is set; an entry found in-use loads as an
// inconsistent bitmap without data. A corrupt extension, directory or
// table fails the whole load with QEMU's message and loads nothing.
// On a read-only node the bitmaps are read-only. On a writable node they
// record writes, and every entry is first marked in-use on disk in QEMU's
// crash-safe order (autoclear bit 0 cleared and synced, directory rewritten
// in place and synced, bit set again and synced), so that whatever happens
// next QEMU sees them in-use (inconsistent), never stale. Every qcow2 node
// gets a Qcow2BitmapStore (bitmap_store.h), which stores them back at close.
//
// co_open_qcow2_bitmaps() is what Qcow2Driver::co_open calls last.
// Thread rules: loop-thread only.
#pragma once

#include "block/core/node.h"
#include "block/drivers/qcow2/bitmap_format.h"
#include "block/drivers/qcow2/format.h"
#include "strata/result.h"
#include "strata/task.h"

namespace strata::qcow2 {

// The directory the header points at, checked; empty without the
// extension or with autoclear bit 0 clear.
struct BitmapDirectory {
  BitmapsExtension ext;
  std::vector<BitmapDirEntry> entries;
};
Task<Result<BitmapDirectory>> co_read_bitmap_directory(const Header& header, Child& file);

// QEMU's update_ext_header_and_dir_in_place with every entry of `dir`
// marked in-use, in the crash-safe order described above.
Task<Result<void>> co_mark_directory_in_use(const Header& header, Child& file,
                                            BitmapDirectory& dir);

Task<Result<void>> co_load_qcow2_bitmaps(Node& node);
// The same, for the driver's open path.
inline Task<Result<void>> co_open_qcow2_bitmaps(Node& node) {
  return co_load_qcow2_bitmaps(node);
}

}  // namespace strata::qcow2
