// The block-dirty-bitmap-* operations with QEMU's checks, order of checks
// and messages (QEMU's block/monitor/bitmap-qmp-cmds.c), for the QMP layer,
// its transaction actions and embedders.
//
// Contract: every function validates first and changes nothing when it
// fails. Errors are GenericError in QMP terms. Operations that a
// transaction may have to undo (clear, merge) can hand back the previous
// bits in `backup`; restore_bitmap() puts them back.
// Thread rules: loop-thread only.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "block/bitmap/dirty_bitmap.h"
#include "strata/result.h"
#include "strata/task.h"

namespace strata {

class Graph;
class Node;

// QEMU's block_dirty_bitmap_lookup: "Node '%s' not found",
// "Dirty bitmap '%s' not found".
Result<DirtyBitmap*> lookup_bitmap(const Graph& graph, const std::string& node,
                                   const std::string& name);

struct BitmapAddOptions {
  std::optional<uint64_t> granularity;  // default: default_bitmap_granularity(node)
  bool persistent = false;
  bool disabled = false;
};

// block-dirty-bitmap-add.
Task<Result<DirtyBitmap*>> co_add_bitmap(Graph& graph, const std::string& node,
                                         const std::string& name, BitmapAddOptions options);
// block-dirty-bitmap-remove: checks BUSY and RO (an inconsistent bitmap may
// be removed), deletes a persistent bitmap from the image, then releases it
// unless `release` is false (the transaction action releases at commit).
Task<Result<DirtyBitmap*>> co_remove_bitmap(Graph& graph, const std::string& node,
                                            const std::string& name, bool release = true);
// block-dirty-bitmap-clear (DEFAULT checks).
Result<DirtyBitmap*> clear_bitmap(const Graph& graph, const std::string& node,
                                  const std::string& name,
                                  std::optional<HBitmap>* backup = nullptr);
// block-dirty-bitmap-enable / -disable (ALLOW_RO checks).
Result<DirtyBitmap*> enable_bitmap(const Graph& graph, const std::string& node,
                                   const std::string& name, bool enable);

// A merge source: a bitmap on the target's node (node empty) or on another.
struct BitmapSource {
  std::string node;
  std::string name;
};
// block-dirty-bitmap-merge: target |= every source; the target changes only
// if every source is valid.
Result<DirtyBitmap*> merge_bitmaps(const Graph& graph, const std::string& node,
                                   const std::string& target,
                                   const std::vector<BitmapSource>& sources,
                                   std::optional<HBitmap>* backup = nullptr);
// x-debug-block-dirty-bitmap-sha256 (no state checks).
Result<std::string> bitmap_sha256(const Graph& graph, const std::string& node,
                                  const std::string& name);

// block-dirty-bitmap-populate: sets the bits of every range allocated in
// `node` or in its backing chain above `base` (empty: the whole chain).
// DEFAULT checks on the bitmap; "Node '%s' is not a backing image of '%s'"
// when `base` is not below `node`.
Task<Result<DirtyBitmap*>> co_populate_bitmap(Graph& graph, const std::string& node,
                                              const std::string& name, const std::string& base);
// Sets in `bits` the ranges allocated in the layers from `top` down to,
// not including, `base` (null: all layers).
Task<Result<void>> co_mark_allocated(Node& top, const Node* base, HBitmap& bits);

// Puts back the bits a clear or merge saved in its backup.
void restore_bitmap(DirtyBitmap& bitmap, HBitmap&& backup);

// BlockDirtyInfo list of a node, or null when it has no bitmaps (QEMU
// leaves `dirty-bitmaps` out then).
nlohmann::json query_bitmaps(const Node& node);

}  // namespace strata
