// Loading persistent bitmaps of a qcow2 node; see bitmap_load.h.
#include "block/drivers/qcow2/bitmap_load.h"

#include <cerrno>

#include "block/bitmap/dirty_bitmap.h"
#include "block/drivers/qcow2/bitmap_format.h"
#include "block/drivers/qcow2/qcow2.h"

namespace strata::qcow2 {

namespace {

ClusterReader reader_for(Child& file) {
  return [&file](uint64_t offset, std::span<uint8_t> buf) -> Task<Result<void>> {
    co_return co_await file.co_pread(offset, buf);
  };
}

// Reads and checks the directory the extension points at.
Task<Result<std::vector<BitmapDirEntry>>> co_read_directory(const Header& header, Child& file) {
  const HeaderExtension* ext = header.find_extension(kExtBitmaps);
  if (!ext || !(header.autoclear_features & kAutoclearBitmaps)) {
    co_return std::vector<BitmapDirEntry>{};
  }
  auto parsed = parse_bitmaps_extension(ext->data, header.cluster_size());
  if (!parsed) co_return std::move(parsed).error();
  if (parsed->directory_size == 0) {
    co_return Error{EINVAL, "Requested bitmap directory size is zero"};
  }
  std::vector<uint8_t> raw(parsed->directory_size);
  auto r = co_await file.co_pread(parsed->directory_offset, raw);
  if (!r) co_return Error{r.error().code, "Failed to read bitmap directory"};
  co_return parse_bitmap_directory(raw, parsed->nb_bitmaps, header.cluster_size(), header.size);
}

}  // namespace

Task<Result<void>> co_load_qcow2_bitmaps(Node& node) {
  auto* driver = dynamic_cast<Qcow2Driver*>(&node.driver());
  if (!driver || !driver->file()) co_return Error{EINVAL, "not a qcow2 node"};
  const Header& header = driver->header();
  auto entries = co_await co_read_directory(header, *driver->file());
  if (!entries) co_return std::move(entries).error();
  if (entries->empty()) co_return Result<void>{};
  if (!node.read_only()) {
    co_return Error{ENOTSUP, "persistent bitmaps of writable qcow2 nodes are not supported yet"};
  }
  // Load every bitmap before adding any, so a failure leaves the node as it was.
  std::vector<std::pair<const BitmapDirEntry*, HBitmap>> loaded;
  for (const BitmapDirEntry& e : *entries) {
    HBitmap bits(header.size, e.granularity_bits);
    if (!e.in_use()) {
      auto r = co_await co_load_bitmap(e, header.size, header.cluster_size(),
                                       reader_for(*driver->file()));
      if (!r) co_return std::move(r).error();
      bits = std::move(*r);
    }
    loaded.emplace_back(&e, std::move(bits));
  }
  BitmapSet& set = node.bitmaps();
  for (auto& [e, bits] : loaded) {
    auto created = set.create(uint64_t{1} << e->granularity_bits, e->name);
    if (!created) co_return std::move(created).error();
    DirtyBitmap* b = *created;
    b->bits() = std::move(bits);
    b->set_persistent(true);
    b->set_read_only(true);
    if (e->in_use()) {
      b->set_inconsistent();
    } else {
      b->set_enabled(e->auto_flag());
    }
  }
  co_return Result<void>{};
}

}  // namespace strata::qcow2
