#include "nbd/bitmaps.h"

#include "block/bitmap/dirty_bitmap.h"
#include "block/core/node.h"

namespace strata::nbd {

namespace {

class DirtyBitmapView final : public BitmapView {
 public:
  explicit DirtyBitmapView(DirtyBitmap& bitmap) : bitmap_(bitmap), name_(bitmap.name()) {
    bitmap_.set_busy(true);
  }
  ~DirtyBitmapView() override { bitmap_.set_busy(false); }

  const std::string& name() const override { return name_; }

  std::pair<bool, uint64_t> run(uint64_t offset, uint64_t max) const override {
    const HBitmap& bits = bitmap_.bits();
    uint64_t end = offset + max;
    bool dirty = offset < bits.size() && bits.get(offset);
    auto next = dirty ? bits.next_clean(offset, end) : bits.next_dirty(offset, end);
    uint64_t stop = next ? *next : end;
    return {dirty, stop > offset ? stop - offset : max};
  }

 private:
  DirtyBitmap& bitmap_;
  std::string name_;
};

// The next node down the chain whose bitmaps apply to this data: a filter's
// child or the backing file.
Node* next_down(Node* node) {
  if (Child* f = node->filtered()) return f->node();
  if (Child* b = node->backing()) return b->node();
  return nullptr;
}

}  // namespace

Result<std::unique_ptr<BitmapView>> resolve_dirty_bitmap(Node& node, const std::string& name,
                                                         bool writable_export) {
  DirtyBitmap* found = nullptr;
  Node* owner = &node;
  for (Node* n = &node; n && !found; n = next_down(n)) {
    found = n->bitmaps().find(name);
    owner = n;
  }
  if (!found) return Error{ENOENT, "Bitmap '" + name + "' is not found"};
  if (!writable_export && !owner->read_only() && found->enabled()) {
    return Error{EINVAL, "Enabled bitmap '" + name + "' incompatible with readonly export"};
  }
  STRATA_TRY(found->check(kBitmapAllowRo));
  return std::unique_ptr<BitmapView>(new DirtyBitmapView(*found));
}

}  // namespace strata::nbd
