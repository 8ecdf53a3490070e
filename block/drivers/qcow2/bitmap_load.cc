// Loading persistent bitmaps of a qcow2 node; see bitmap_load.h.
#include "block/drivers/qcow2/bitmap_load.h"

#include <cerrno>

#include "block/bitmap/dirty_bitmap.h"
#include "block/drivers/qcow2/bitmap_format.h"
#include "block/drivers/qcow2/qcow2.h"

namespace strata::qcow2 {

namespace {

constexpr uint64_t kAutoclearOffset = 88;  // header field, v3

ClusterReader reader_for(Child& file) {
  return [&file](uint64_t offset, std::span<uint8_t> buf) -> Task<Result<void>> {
    co_return co_await file.co_pread(offset, buf);
  };
}

struct Directory {
  BitmapsExtension ext;
  std::vector<BitmapDirEntry> entries;
};

// Reads and checks the directory the extension points at.
Task<Result<Directory>> co_read_directory(const Header& header, Child& file) {
  const HeaderExtension* ext = header.find_extension(kExtBitmaps);
  if (!ext || !(header.autoclear_features & kAutoclearBitmaps)) co_return Directory{};
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
  co_return Directory{*parsed, std::move(*entries)};
}

Task<Result<void>> co_write_autoclear(Child& file, uint64_t autoclear) {
  std::vector<uint8_t> field(8);
  for (int i = 0; i < 8; i++) field[i] = static_cast<uint8_t>(autoclear >> (56 - 8 * i));
  STRATA_CO_TRY(co_await file.co_pwrite(kAutoclearOffset, field));
  co_return co_await file.co_flush();
}

// QEMU's update_ext_header_and_dir_in_place with every entry in-use.
Task<Result<void>> co_mark_in_use(const Header& header, Child& file, Directory dir) {
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

}  // namespace

Task<Result<void>> co_load_qcow2_bitmaps(Node& node) {
  auto* driver = dynamic_cast<Qcow2Driver*>(&node.driver());
  if (!driver || !driver->file()) co_return Error{EINVAL, "not a qcow2 node"};
  const Header& header = driver->header();
  auto dir = co_await co_read_directory(header, *driver->file());
  if (!dir) co_return std::move(dir).error();
  if (dir->entries.empty()) co_return Result<void>{};
  bool writable = !node.read_only();
  // Load every bitmap before adding any, so a failure leaves the node as it was.
  std::vector<std::pair<const BitmapDirEntry*, HBitmap>> loaded;
  for (const BitmapDirEntry& e : dir->entries) {
    HBitmap bits(header.size, e.granularity_bits);
    if (!e.in_use()) {
      auto r = co_await co_load_bitmap(e, header.size, header.cluster_size(),
                                       reader_for(*driver->file()));
      if (!r) co_return std::move(r).error();
      bits = std::move(*r);
    }
    loaded.emplace_back(&e, std::move(bits));
  }
  if (writable) STRATA_CO_TRY(co_await co_mark_in_use(header, *driver->file(), *dir));
  BitmapSet& set = node.bitmaps();
  for (auto& [e, bits] : loaded) {
    auto created = set.create(uint64_t{1} << e->granularity_bits, e->name);
    if (!created) co_return std::move(created).error();
    DirtyBitmap* b = *created;
    b->bits() = std::move(bits);
    b->set_persistent(true);
    b->set_read_only(!writable);
    if (e->in_use()) {
      b->set_inconsistent();
    } else {
      b->set_enabled(e->auto_flag());
    }
  }
  co_return Result<void>{};
}

}  // namespace strata::qcow2
