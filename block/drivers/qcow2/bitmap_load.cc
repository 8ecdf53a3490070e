// Loading persistent bitmaps of a qcow2 node; see bitmap_load.h.
#include "block/drivers/qcow2/bitmap_load.h"

#include <cerrno>
#include <optional>

#include "base/log.h"
#include "block/bitmap/dirty_bitmap.h"
#include "block/drivers/qcow2/bitmap_format.h"
#include "block/drivers/qcow2/bitmap_store.h"
#include "block/drivers/qcow2/qcow2.h"
#include "strata/engine.h"

namespace strata::qcow2 {

namespace {

constexpr uint64_t kAutoclearOffset = 88;  // header field, v3

ClusterReader reader_for(Child& file) {
  return [&file](uint64_t offset, std::span<uint8_t> buf) -> Task<Result<void>> {
    co_return co_await file.co_pread(offset, buf);
  };
}

Task<Result<void>> co_write_autoclear(Child& file, uint64_t autoclear) {
  std::vector<uint8_t> field(8);
  for (int i = 0; i < 8; i++) field[i] = static_cast<uint8_t>(autoclear >> (56 - 8 * i));
  STRATA_CO_TRY(co_await file.co_pwrite(kAutoclearOffset, field));
  co_return co_await file.co_flush();
}

}  // namespace

Task<Result<void>> co_mark_directory_in_use(const Header& header, Child& file,
                                            BitmapDirectory& dir) {
  for (BitmapDirEntry& e : dir.entries) e.flags |= kBitmapFlagInUse;
  std::vector<uint8_t> raw = encode_bitmap_directory(dir.entries);
  if (raw.size() != dir.ext.directory_size) {
    co_return Error{EINVAL, "Broken bitmap directory"};
  }
  STRATA_CO_TRY(co_await co_write_autoclear(file, header.autoclear_features & ~kAutoclearBitmaps));
  STRATA_CO_TRY(co_await file.co_pwrite(dir.ext.directory_offset, raw));
  STRATA_CO_TRY(co_await file.co_flush());
  co_return co_await co_write_autoclear(file, header.autoclear_features);
}

namespace {

// Reads every bitmap before any is added. An in-use entry, or one whose
// table or data cannot be read or is corrupt, gets no data (it loads as
// inconsistent; the reason is logged).
Task<std::vector<std::optional<HBitmap>>> co_load_all(Node& node, const Header& header, Child& file,
                                                      const BitmapDirectory& dir) {
  std::vector<std::optional<HBitmap>> loaded;
  for (const BitmapDirEntry& e : dir.entries) {
    loaded.emplace_back();
    if (e.in_use()) continue;
    auto r = co_await co_load_bitmap(e, header.size, header.cluster_size(), reader_for(file));
    if (r) {
      loaded.back() = std::move(*r);
    } else {
      node.engine().logger().warning("qcow2 node '" + node.name() + "': " + r.error().message +
                                     "; the bitmap is inconsistent");
    }
  }
  co_return loaded;
}

}  // namespace

Task<Result<BitmapDirectory>> co_read_bitmap_directory(const Header& header, Child& file) {
  const HeaderExtension* ext = header.find_extension(kExtBitmaps);
  if (!ext || !(header.autoclear_features & kAutoclearBitmaps)) co_return BitmapDirectory{};
  auto parsed = parse_bitmaps_extension(ext->data, header.cluster_size());
  if (!parsed) co_return std::move(parsed).error();
  if (parsed->directory_size == 0) {
    co_return Error{EINVAL, "Requested bitmap directory size is zero"};
  }
  std::vector<uint8_t> raw(parsed->directory_size);
  auto r = co_await file.co_pread(parsed->directory_offset, raw);
  if (!r) co_return Error{r.error().code, "Failed to read bitmap directory"};
  auto entries =
      parse_bitmap_directory(raw, parsed->nb_bitmaps, header.cluster_size(), header.size);
  if (!entries) co_return std::move(entries).error();
  co_return BitmapDirectory{*parsed, std::move(*entries)};
}

Task<Result<void>> co_load_qcow2_bitmaps(Node& node) {
  auto* driver = dynamic_cast<Qcow2Driver*>(&node.driver());
  if (!driver || !driver->file()) co_return Error{EINVAL, "not a qcow2 node"};
  const Header& header = driver->header();
  BitmapSet& set = node.bitmaps();
  auto dir = co_await co_read_bitmap_directory(header, *driver->file());
  if (!dir) {
    // A corrupt directory: no bitmap can be trusted or even named. Guest
    // data is unaffected; the image's bitmaps stay as they are.
    node.engine().logger().warning("qcow2 node '" + node.name() + "': " + dir.error().message +
                                   "; persistent bitmaps not loaded");
    set.set_store(std::make_unique<Qcow2BitmapStore>(node, std::vector<BitmapDirEntry>{}));
    co_return Result<void>{};
  }
  bool writable = !node.read_only();
  auto loaded = co_await co_load_all(node, header, *driver->file(), *dir);
  std::vector<BitmapDirEntry> as_read = dir->entries;
  if (writable && !dir->entries.empty()) {
    STRATA_CO_TRY(co_await co_mark_directory_in_use(header, *driver->file(), *dir));
  }
  for (size_t i = 0; i < loaded.size(); i++) {
    const BitmapDirEntry& e = as_read[i];
    auto created = set.create(uint64_t{1} << e.granularity_bits, e.name);
    if (!created) co_return std::move(created).error();
    DirtyBitmap* b = *created;
    b->set_persistent(true);
    b->set_read_only(!writable);
    if (!loaded[i]) {
      b->set_inconsistent();
      continue;
    }
    b->bits() = std::move(*loaded[i]);
    b->set_enabled(e.auto_flag());
  }
  set.set_store(std::make_unique<Qcow2BitmapStore>(node, std::move(dir->entries)));
  co_return Result<void>{};
}

}  // namespace strata::qcow2
