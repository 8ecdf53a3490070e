// Qcow2BitmapStore: a qcow2 node's persistent dirty bitmaps on disk after
// open (QEMU's qcow2_store_persistent_dirty_bitmaps,
// qcow2_co_remove_persistent_dirty_bitmap, qcow2_co_can_store_new_dirty_bitmap
// and qcow2_get_bitmap_info_list).
//
// Contract: installed in the node's BitmapSet by the loader
// (bitmap_load.h) for every qcow2 node; it keeps a copy of the bitmap
// directory as it is on disk, for image info. Storing writes every
// persistent, writable, consistent bitmap of the node into new clusters
// (data, then table), writes a new directory, flushes, then switches the
// header extension (autoclear bit 0 set while any bitmap is stored, cleared
// with the extension when none is left) and only then frees the old
// directory and tables: a crash at any point leaves the old or the new
// state plus leaked clusters, never a reference to a freed cluster. Stored
// bitmaps get the `auto` flag when enabled and lose `in_use`; inconsistent
// ones keep their old entry. Removal rewrites the directory the same way.
// All of it runs under the image's metadata lock.
// Thread rules: loop-thread only.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "block/bitmap/bitmap_store.h"
#include "block/drivers/qcow2/bitmap_format.h"

namespace strata::qcow2 {

class Qcow2Driver;

class Qcow2BitmapStore final : public BitmapStore {
 public:
  Qcow2BitmapStore(Node& node, std::vector<BitmapDirEntry> on_disk)
      : node_(node), on_disk_(std::move(on_disk)) {}

  Task<Result<void>> co_can_store_new_bitmap(const std::string& name,
                                             uint64_t granularity) override;
  Task<Result<void>> co_remove_persistent_bitmap(const std::string& name) override;
  Task<Result<void>> co_store_bitmaps() override;
  bool supports_persistent() const override;

  // QEMU's qcow2_reopen_bitmaps_rw: every entry of the image's directory
  // not in-use is marked in-use on disk (in place, crash safe); with
  // `make_writable` the node's bitmaps of the directory stop being
  // read-only (a read-write reopen) — otherwise they stay as they are (a
  // read-only reopen that was aborted after its bitmaps were stored).
  Task<Result<void>> co_mark_in_use(bool make_writable);

  // The directory as last read or written.
  const std::vector<BitmapDirEntry>& on_disk() const { return on_disk_; }

 private:
  Qcow2Driver& driver() const;
  Task<Result<void>> co_store_locked();

  Node& node_;
  std::vector<BitmapDirEntry> on_disk_;
};

// QEMU's check_constraints_on_bitmap: granularity 512 B..2 GiB, the bitmap
// fits the table limits, name at most 1023 bytes.
Result<void> check_bitmap_constraints(uint64_t disk_size, uint64_t cluster_size,
                                      const std::string& name, uint64_t granularity);

// What Qcow2Driver calls: stores the bitmaps at close (no-op without a store).
Task<Result<void>> co_store_qcow2_bitmaps(Node& node);
// Reopen: after a read-only reopen committed, the node's persistent bitmaps
// are read-only (they were stored in prepare); when it becomes writable
// again, or the read-only reopen was aborted, their entries are marked
// in-use again (Qcow2BitmapStore::co_mark_in_use; no-op without a store).
void set_qcow2_bitmaps_read_only(Node& node);
Task<Result<void>> co_mark_qcow2_bitmaps_in_use(Node& node, bool make_writable);
// QEMU's qcow2_truncate_bitmaps_check, before any resize: every bitmap in
// the image's directory must be loaded and usable (not busy, read-only or
// inconsistent), since only loaded bitmaps follow the new size.
Task<Result<void>> co_check_qcow2_bitmaps_resizable(Node& node);
// format-specific "bitmaps" (name, granularity, flags as on disk), or null
// when the image holds none.
nlohmann::json qcow2_bitmaps_info(const Node& node);

}  // namespace strata::qcow2
