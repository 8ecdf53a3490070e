// ImageOps: what an image format can do beyond I/O that tools and jobs need
// (QEMU's bdrv_change_backing_file, bdrv_make_empty, the snapshot
// callbacks), reached through Driver::image_ops() instead of casts to a
// driver class. A format that cannot do something does not offer ImageOps
// (image_ops() is null) and callers give QEMU's "not supported" message.
//
// Contract: the node is drained and writable (except for the queries and
// co_snapshot_load_tmp);
// each operation is complete and on disk when it returns successfully, and
// changes nothing when it fails.
// Thread rules: loop-thread only.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "strata/result.h"
#include "strata/task.h"

namespace strata {

// One internal snapshot as QEMU's SnapshotInfo describes it.
struct SnapshotEntry {
  std::string id;
  std::string name;
  uint64_t vm_state_size = 0;
  uint32_t date_sec = 0;
  uint32_t date_nsec = 0;
  uint64_t vm_clock_nsec = 0;
  bool has_icount = false;
  int64_t icount = 0;
};

class ImageOps {
 public:
  virtual ~ImageOps() = default;

  // The backing file name and format the image header records (QEMU's
  // bs->backing_file and backing_format; empty: none).
  virtual std::string backing_file_name() const = 0;
  virtual std::string backing_format_name() const = 0;
  // Whether the header says the image was not closed cleanly (QEMU's
  // BlockDriverInfo.is_dirty, qemu-img info's dirty-flag).
  virtual bool dirty_flag() const = 0;

  // Rewrites the backing file name and format in the image header (empty
  // file: none).
  virtual Task<Result<void>> co_change_backing_file(std::string file, std::string format) = 0;
  // Deallocates every cluster of the active layer, so the image reads
  // through to its backing file (commit).
  virtual Task<Result<void>> co_make_empty() = 0;

  // Internal snapshots (qcow2): list, create from the active state, delete
  // by id (the caller resolves names), revert to one.
  virtual std::vector<SnapshotEntry> list_snapshots() const = 0;
  // `icount`: the instruction count recorded with it; -1 records none
  // (QMP snapshots), qemu-img records 0.
  virtual Task<Result<void>> co_snapshot_create(std::string name, int64_t icount) = 0;
  virtual Task<Result<void>> co_snapshot_delete(std::string id) = 0;
  virtual Task<Result<void>> co_snapshot_apply(std::string id) = 0;
  // Shows snapshot `id` and/or `name` (an empty one matches any) in place
  // of the active layer of a read-only node until it is closed (QEMU's
  // bdrv_snapshot_load_tmp, for qemu-img convert -l); ENOENT when no
  // snapshot matches, EINVAL on a writable node.
  virtual Task<Result<void>> co_snapshot_load_tmp(std::string id, std::string name) = 0;
};

}  // namespace strata
