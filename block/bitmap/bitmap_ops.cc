// The block-dirty-bitmap-* operations; see bitmap_ops.h.
#include "block/bitmap/bitmap_ops.h"

#include <bit>
#include <cerrno>

#include "block/bitmap/bitmap_store.h"
#include "block/core/graph.h"

namespace strata {

namespace {

Result<Node*> find_node(const Graph& graph, const std::string& node) {
  Node* n = graph.find(node);
  if (!n) return Error{ENODEV, "Node '" + node + "' not found"};
  return n;
}

Result<DirtyBitmap*> find_on(const Node& node, const std::string& name) {
  BitmapSet* set = node.bitmaps_if_any();
  DirtyBitmap* bitmap = set ? set->find(name) : nullptr;
  if (!bitmap) return Error{ENOENT, "Dirty bitmap '" + name + "' not found"};
  return bitmap;
}

Result<void> check_granularity(uint64_t granularity) {
  if (granularity < kBitmapMinGranularity || !std::has_single_bit(granularity)) {
    return Error{EINVAL, "Granularity must be power of 2 and at least 512"};
  }
  return {};
}

Error size_mismatch(uint64_t dst, uint64_t src) {
  return Error{EINVAL, "Bitmaps are of different sizes (destination size is " +
                           std::to_string(dst) + ", source size is " + std::to_string(src) +
                           ") and can't be merged"};
}

}  // namespace

Result<DirtyBitmap*> lookup_bitmap(const Graph& graph, const std::string& node,
                                   const std::string& name) {
  STRATA_TRY_ASSIGN(Node * n, find_node(graph, node));
  return find_on(*n, name);
}

Task<Result<DirtyBitmap*>> co_add_bitmap(Graph& graph, const std::string& node,
                                         const std::string& name, BitmapAddOptions options) {
  if (name.empty()) co_return Error{EINVAL, "Bitmap name cannot be empty"};
  Node* n = graph.find(node);
  if (!n) {
    co_return Error{ENODEV, "Cannot find device='" + node + "' nor node-name='" + node + "'"};
  }
  uint64_t granularity = options.granularity.value_or(default_bitmap_granularity(*n));
  if (options.granularity) STRATA_CO_TRY(check_granularity(granularity));
  if (options.persistent) {
    BitmapStore* store = bitmap_store_of(*n);
    if (!store) {
      co_return Error{
          ENOTSUP, "Can't store persistent bitmaps to " + n->name() + ": Operation not supported"};
    }
    STRATA_CO_TRY(co_await store->co_can_store_new_bitmap(name, granularity));
  }
  STRATA_CO_TRY_ASSIGN(DirtyBitmap * bitmap, n->bitmaps().create(granularity, name));
  if (options.disabled) bitmap->set_enabled(false);
  bitmap->set_persistent(options.persistent);
  co_return bitmap;
}

Task<Result<DirtyBitmap*>> co_remove_bitmap(Graph& graph, const std::string& node,
                                            const std::string& name, bool release) {
  STRATA_CO_TRY_ASSIGN(DirtyBitmap * bitmap, lookup_bitmap(graph, node, name));
  STRATA_CO_TRY(bitmap->check(kBitmapBusy | kBitmapReadOnly));
  if (bitmap->persistent()) {
    if (BitmapStore* store = bitmap_store_of(bitmap->node())) {
      STRATA_CO_TRY(co_await store->co_remove_persistent_bitmap(name));
    }
  }
  if (release) {
    bitmap->set().release(bitmap);
    co_return nullptr;
  }
  co_return bitmap;
}

Result<DirtyBitmap*> clear_bitmap(const Graph& graph, const std::string& node,
                                  const std::string& name, std::optional<HBitmap>* backup) {
  STRATA_TRY_ASSIGN(DirtyBitmap * bitmap, lookup_bitmap(graph, node, name));
  STRATA_TRY(bitmap->check(kBitmapDefault));
  if (backup) backup->emplace(bitmap->bits());
  bitmap->bits().reset_all();
  return bitmap;
}

Result<DirtyBitmap*> enable_bitmap(const Graph& graph, const std::string& node,
                                   const std::string& name, bool enable) {
  STRATA_TRY_ASSIGN(DirtyBitmap * bitmap, lookup_bitmap(graph, node, name));
  STRATA_TRY(bitmap->check(kBitmapAllowRo));
  bitmap->set_enabled(enable);
  return bitmap;
}

Result<DirtyBitmap*> merge_bitmaps(const Graph& graph, const std::string& node,
                                   const std::string& target,
                                   const std::vector<BitmapSource>& sources,
                                   std::optional<HBitmap>* backup) {
  STRATA_TRY_ASSIGN(DirtyBitmap * dst, lookup_bitmap(graph, node, target));
  // Sources are gathered in an anonymous bitmap first, as QEMU does, so the
  // target is untouched unless every source is good.
  HBitmap gathered(dst->node().size(), dst->bits().granularity_bits());
  for (const BitmapSource& source : sources) {
    auto src = source.node.empty() ? find_on(dst->node(), source.name)
                                   : lookup_bitmap(graph, source.node, source.name);
    if (!src) return std::move(src).error();
    STRATA_TRY((*src)->check(kBitmapAllowRo));
    if ((*src)->size() != gathered.size()) return size_mismatch(gathered.size(), (*src)->size());
    gathered.merge((*src)->bits());
  }
  STRATA_TRY(dst->check(kBitmapDefault));
  if (dst->size() != gathered.size()) return size_mismatch(dst->size(), gathered.size());
  if (backup) backup->emplace(dst->bits());
  dst->bits().merge(gathered);
  return dst;
}

Result<std::string> bitmap_sha256(const Graph& graph, const std::string& node,
                                  const std::string& name) {
  STRATA_TRY_ASSIGN(DirtyBitmap * bitmap, lookup_bitmap(graph, node, name));
  return bitmap->bits().sha256_hex();
}

Task<Result<void>> co_mark_allocated(Node& top, const Node* base, HBitmap& bits) {
  for (Node* layer = &top; layer && layer != base;) {
    uint64_t end = std::min(layer->size(), bits.size());
    for (uint64_t offset = 0; offset < end;) {
      auto st = co_await layer->co_block_status(offset, end - offset);
      if (!st) co_return std::move(st).error();
      if (st->bytes == 0) break;
      if (st->flags & kStatusAllocated) bits.set(offset, st->bytes);
      offset += st->bytes;
    }
    Child* backing = layer->backing();
    layer = backing ? backing->node() : nullptr;
  }
  co_return Result<void>{};
}

Task<Result<DirtyBitmap*>> co_populate_bitmap(Graph& graph, const std::string& node,
                                              const std::string& name, const std::string& base) {
  STRATA_CO_TRY_ASSIGN(DirtyBitmap * bitmap, lookup_bitmap(graph, node, name));
  STRATA_CO_TRY(bitmap->check(kBitmapDefault));
  Node& top = bitmap->node();
  const Node* base_node = nullptr;
  if (!base.empty()) {
    STRATA_CO_TRY_ASSIGN(base_node, find_node(graph, base));
    bool below = false;
    for (Child* c = top.backing(); c && !below; c = c->node()->backing()) {
      below = c->node() == base_node;
    }
    if (!below) {
      co_return Error{EINVAL, "Node '" + base + "' is not a backing image of '" + node + "'"};
    }
  }
  // Gather first: a failed block-status query leaves the bitmap unchanged.
  HBitmap allocated(bitmap->size(), bitmap->bits().granularity_bits());
  STRATA_CO_TRY(co_await co_mark_allocated(top, base_node, allocated));
  bitmap->bits().merge(allocated);
  co_return bitmap;
}

void restore_bitmap(DirtyBitmap& bitmap, HBitmap&& backup) {
  bitmap.bits() = std::move(backup);
}

nlohmann::json query_bitmaps(const Node& node) {
  const BitmapSet* set = node.bitmaps_if_any();
  if (!set || set->empty()) return nullptr;
  return set->query_info();
}

}  // namespace strata
