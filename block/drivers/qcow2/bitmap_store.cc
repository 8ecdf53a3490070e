// Storing and removing a qcow2 node's persistent bitmaps; see bitmap_store.h.
#include "block/drivers/qcow2/bitmap_store.h"

#include <algorithm>
#include <bit>
#include <cerrno>

#include "base/log.h"
#include "block/drivers/qcow2/bitmap_load.h"
#include "block/drivers/qcow2/qcow2.h"
#include "strata/engine.h"

namespace strata::qcow2 {

namespace {

uint64_t clusters_for(uint64_t bytes, uint64_t cluster_size) {
  return (bytes + cluster_size - 1) / cluster_size;
}

uint64_t dir_entry_size(const std::string& name) {
  return (24 + name.size() + 7) & ~uint64_t{7};
}

BitmapDirEntry* find_entry(std::vector<BitmapDirEntry>& entries, const std::string& name) {
  auto it = std::find_if(entries.begin(), entries.end(),
                         [&](const BitmapDirEntry& e) { return e.name == name; });
  return it == entries.end() ? nullptr : &*it;
}

// Writes a table or directory at `offset`: its own bytes only, as QEMU
// (the rest of its last cluster is never read).
Task<Result<void>> co_write_structure(Qcow2Driver& d, uint64_t offset, std::vector<uint8_t> data) {
  STRATA_CO_TRY(d.check_metadata_write(offset, data.size()));
  co_return co_await d.file()->co_pwrite(offset, data);
}

// Clusters of bitmap structures given back are discarded in the file, as
// QEMU frees them (QCOW2_DISCARD_ALWAYS).
void free_bitmap_clusters(Qcow2Driver& d, uint64_t offset, uint64_t count) {
  d.refcounts().free_later(offset, count, true);
}

void free_table_clusters(Qcow2Driver& d, const std::vector<uint64_t>& table) {
  for (uint64_t t : table) {
    if (t & kBitmapTableOffsetMask) free_bitmap_clusters(d, t & kBitmapTableOffsetMask, 1);
  }
}

// QEMU's store_bitmap_data + store_bitmap: data clusters, then the table.
// On failure, whatever was allocated is queued for freeing.
Task<Result<void>> co_write_bitmap(Qcow2Driver& d, const DirtyBitmap& bitmap,
                                   BitmapDirEntry& entry) {
  const HBitmap& bits = bitmap.bits();
  uint64_t cs = d.header().cluster_size();
  uint64_t n = bitmap_table_entries(bits.size(), entry.granularity_bits, cs);
  if (n > kMaxBitmapTableSize || n * cs > kMaxBitmapPhysSize) {
    co_return Error{EINVAL, "Bitmap '" + bitmap.name() + "' is too big"};
  }
  std::vector<uint64_t> table(n, 0);
  auto fail = [&](const Error& e, const std::string& what) {
    free_table_clusters(d, table);
    return Error{e.code, what + " bitmap '" + bitmap.name() + "'" +
                             (what.starts_with("Failed to write") ? " to file" : "")};
  };
  for (uint64_t i = 0; i < n; i++) {
    if (!bitmap_cluster_dirty(bits, i, cs)) continue;
    auto off = co_await d.refcounts().co_alloc(1);
    if (!off) co_return fail(off.error(), "Failed to allocate clusters for");
    table[i] = *off;
    if (auto c = d.check_metadata_write(*off, cs); !c) {
      free_table_clusters(d, table);
      co_return std::move(c).error();
    }
    auto w = co_await d.file()->co_pwrite(*off, serialize_bitmap_cluster(bits, i, cs));
    if (!w) co_return fail(w.error(), "Failed to write");
  }
  auto toff = co_await d.refcounts().co_alloc(clusters_for(n * 8, cs));
  if (!toff) co_return fail(toff.error(), "Failed to allocate clusters for");
  auto w = d.check_metadata_write(*toff, n * 8);
  if (!w) {
    free_bitmap_clusters(d, *toff, clusters_for(n * 8, cs));
    free_table_clusters(d, table);
    co_return std::move(w).error();
  }
  w = co_await co_write_structure(d, *toff, encode_bitmap_table(table));
  if (!w) {
    free_bitmap_clusters(d, *toff, clusters_for(n * 8, cs));
    co_return fail(w.error(), "Failed to write");
  }
  entry.table_offset = *toff;
  entry.table_size = uint32_t(n);
  co_return Result<void>{};
}

// QEMU's free_bitmap_clusters: queues the table's data clusters and the
// table itself for freeing. A table that cannot be read is leaked.
Task<void> co_free_bitmap_table(Qcow2Driver& d, const BitmapDirEntry& entry) {
  uint64_t cs = d.header().cluster_size();
  if (entry.table_offset == 0 || entry.table_size == 0) co_return;
  std::vector<uint8_t> raw(uint64_t{entry.table_size} * 8);
  auto read = co_await d.file()->co_pread(entry.table_offset, raw);
  if (!read) co_return;
  auto table = parse_bitmap_table(raw, entry.table_size, cs, entry.name);
  if (!table) co_return;
  free_table_clusters(d, *table);
  free_bitmap_clusters(d, entry.table_offset, clusters_for(raw.size(), cs));
}

void set_bitmaps_extension(Header& h, const BitmapsExtension* ext) {
  std::erase_if(h.extensions, [](const HeaderExtension& e) { return e.type == kExtBitmaps; });
  if (ext) {
    h.extensions.push_back({kExtBitmaps, encode_bitmaps_extension(*ext)});
    h.autoclear_features |= kAutoclearBitmaps;
  } else {
    h.autoclear_features &= ~kAutoclearBitmaps;
  }
}

// QEMU's update_ext_header_and_dir: the new directory goes to new clusters,
// everything reaches the disk, the header switches to it, then the old
// directory is queued for freeing.
Task<Result<void>> co_switch_directory(Qcow2Driver& d, const BitmapDirectory& old,
                                       const std::vector<BitmapDirEntry>& entries) {
  uint64_t cs = d.header().cluster_size();
  BitmapsExtension ext;
  uint64_t new_clusters = 0;
  if (!entries.empty()) {
    std::vector<uint8_t> raw = encode_bitmap_directory(entries);
    if (entries.size() > kMaxBitmaps || raw.size() > kMaxBitmapDirectorySize) {
      co_return Error{EINVAL, "Failed to update bitmap extension: Invalid argument"};
    }
    new_clusters = clusters_for(raw.size(), cs);
    STRATA_CO_TRY_ASSIGN(ext.directory_offset, co_await d.refcounts().co_alloc(new_clusters));
    ext.nb_bitmaps = uint32_t(entries.size());
    ext.directory_size = raw.size();
    auto w = co_await co_write_structure(d, ext.directory_offset, std::move(raw));
    if (w) w = co_await d.refcounts().co_flush();
    if (w) w = co_await d.file()->co_flush();
    if (!w) {
      free_bitmap_clusters(d, ext.directory_offset, new_clusters);
      co_return std::move(w).error();
    }
  }
  Header& h = d.mutable_header();
  Header saved = h;
  // The refcount table may have moved (it grows by relocation).
  h.refcount_table_offset = d.refcounts().table_offset();
  h.refcount_table_clusters = d.refcounts().table_clusters();
  set_bitmaps_extension(h, entries.empty() ? nullptr : &ext);
  auto r = co_await d.co_rewrite_header();
  if (!r) {
    h = saved;
    if (new_clusters) free_bitmap_clusters(d, ext.directory_offset, new_clusters);
    co_return Error{r.error().code, "Failed to update bitmap extension: " + r.error().message};
  }
  if (old.ext.directory_size) {
    free_bitmap_clusters(d, old.ext.directory_offset, clusters_for(old.ext.directory_size, cs));
  }
  co_return Result<void>{};
}

// The plan of a store: the new directory, the bitmaps to write into it and
// the old tables to drop once it is on disk.
struct StorePlan {
  std::vector<BitmapDirEntry> entries;
  std::vector<std::pair<std::string, const DirtyBitmap*>> writes;
  std::vector<BitmapDirEntry> dropped;
};

Result<void> plan_bitmap(StorePlan& plan, const DirtyBitmap& b, uint64_t disk_size,
                         uint64_t cluster_size) {
  const std::string& name = b.name();
  if (auto c = check_bitmap_constraints(disk_size, cluster_size, name, b.granularity()); !c) {
    return Error{EINVAL,
                 "Bitmap '" + name + "' doesn't satisfy the constraints: " + c.error().message};
  }
  BitmapDirEntry* e = find_entry(plan.entries, name);
  if (!e) {
    if (plan.entries.size() + 1 > kMaxBitmaps) {
      return Error{EINVAL, "Too many persistent bitmaps"};
    }
    uint64_t dir_size = dir_entry_size(name);
    for (const auto& x : plan.entries) dir_size += dir_entry_size(x.name);
    if (dir_size > kMaxBitmapDirectorySize) {
      return Error{EINVAL, "Bitmap directory is too large"};
    }
    plan.entries.push_back(BitmapDirEntry{});
    e = &plan.entries.back();
    e->name = name;
  } else {
    if (!e->in_use()) return Error{EEXIST, "Bitmap '" + name + "' already exists in the image"};
    plan.dropped.push_back(*e);
  }
  e->table_offset = 0;
  e->table_size = 0;
  e->flags = b.enabled() ? kBitmapFlagAuto : 0;
  e->granularity_bits = uint8_t(std::countr_zero(b.granularity()));
  plan.writes.emplace_back(name, &b);
  return {};
}

bool storable(const DirtyBitmap& b) {
  return b.persistent() && !b.anonymous() && !b.inconsistent() && !b.read_only();
}

}  // namespace

Result<void> check_bitmap_constraints(uint64_t disk_size, uint64_t cluster_size,
                                      const std::string& name, uint64_t granularity) {
  uint32_t bits = std::countr_zero(granularity);
  if (bits > kMaxBitmapGranularityBits) {
    return Error{EINVAL, "Granularity exceeds maximum (2147483648 bytes)"};
  }
  if (bits < kMinBitmapGranularityBits) {
    return Error{EINVAL, "Granularity is under minimum (512 bytes)"};
  }
  uint64_t granules = disk_size / granularity + (disk_size % granularity != 0);
  uint64_t bytes = (granules + 7) / 8;
  if (bytes > kMaxBitmapPhysSize || bytes > kMaxBitmapTableSize * cluster_size) {
    return Error{EINVAL, "Too much space will be occupied by the bitmap. Use larger granularity"};
  }
  if (name.size() > 1023) return Error{EINVAL, "Name length exceeds maximum (1023 characters)"};
  return {};
}

Qcow2Driver& Qcow2BitmapStore::driver() const {
  return static_cast<Qcow2Driver&>(node_.driver());
}

bool Qcow2BitmapStore::supports_persistent() const {
  return driver().header().version >= 3;
}

Task<Result<void>> Qcow2BitmapStore::co_can_store_new_bitmap(const std::string& name,
                                                             uint64_t granularity) {
  BitmapSet& set = node_.bitmaps();
  if (set.find(name)) co_return Error{EEXIST, "Bitmap already exists: " + name};
  const Header& h = driver().header();
  Result<void> r;
  uint64_t nb = 1, dir_size = dir_entry_size(name);
  for (DirtyBitmap* b : set.all()) {
    if (!b->persistent()) continue;
    nb++;
    dir_size += dir_entry_size(b->name());
  }
  if (h.version < 3) {
    r = Error{EINVAL, "Cannot store dirty bitmaps in qcow2 v2 files"};
  } else if (auto c = check_bitmap_constraints(node_.size(), h.cluster_size(), name, granularity);
             !c) {
    r = std::move(c);
  } else if (nb > kMaxBitmaps) {
    r = Error{EINVAL, "Maximum number of persistent bitmaps is already reached"};
  } else if (dir_size > kMaxBitmapDirectorySize) {
    r = Error{EINVAL, "Not enough space in the bitmap directory"};
  }
  if (r) co_return r;
  co_return Error{r.error().code, "Can't make bitmap '" + name + "' persistent in '" +
                                      node_.name() + "': " + r.error().message};
}

Task<Result<void>> Qcow2BitmapStore::co_remove_persistent_bitmap(const std::string& name) {
  Qcow2Driver& d = driver();
  CoMutex& lock = d.metadata_lock();
  co_await lock.co_lock();
  CoMutex::Guard guard(&lock);
  STRATA_CO_TRY_ASSIGN(BitmapDirectory dir,
                       co_await co_read_bitmap_directory(d.header(), *d.file()));
  std::vector<BitmapDirEntry> entries = dir.entries;
  BitmapDirEntry* e = find_entry(entries, name);
  if (!e) co_return Result<void>{};  // not in the image: not an error (as QEMU)
  BitmapDirEntry removed = *e;
  std::erase_if(entries, [&](const BitmapDirEntry& x) { return x.name == name; });
  STRATA_CO_TRY(co_await co_switch_directory(d, dir, entries));
  on_disk_ = std::move(entries);
  co_await co_free_bitmap_table(d, removed);
  co_return co_await d.co_flush_all_metadata();
}

Task<Result<void>> Qcow2BitmapStore::co_store_bitmaps() {
  Qcow2Driver& d = driver();
  if (node_.read_only() || (d.header().incompatible_features & kIncompatCorrupt)) {
    co_return Result<void>{};
  }
  CoMutex& lock = d.metadata_lock();
  co_await lock.co_lock();
  CoMutex::Guard guard(&lock);
  co_return co_await co_store_locked();
}

Task<Result<void>> Qcow2BitmapStore::co_store_locked() {
  Qcow2Driver& d = driver();
  // Newest first, the order in which QEMU walks a node's bitmaps (and so
  // appends new ones to the directory).
  std::vector<const DirtyBitmap*> bitmaps;
  std::vector<DirtyBitmap*> all = node_.bitmaps().all();
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    if (storable(**it)) bitmaps.push_back(*it);
  }
  if (bitmaps.empty()) co_return Result<void>{};
  STRATA_CO_TRY_ASSIGN(BitmapDirectory dir,
                       co_await co_read_bitmap_directory(d.header(), *d.file()));
  StorePlan plan;
  plan.entries = dir.entries;
  uint64_t cs = d.header().cluster_size();
  for (const DirtyBitmap* b : bitmaps) STRATA_CO_TRY(plan_bitmap(plan, *b, node_.size(), cs));
  Result<void> r;
  for (auto& [name, bitmap] : plan.writes) {
    r = co_await co_write_bitmap(d, *bitmap, *find_entry(plan.entries, name));
    if (!r) break;
  }
  if (r) r = co_await co_switch_directory(d, dir, plan.entries);
  if (!r) {
    // Nothing on disk points at the new tables: give them back.
    for (auto& [name, bitmap] : plan.writes) {
      const BitmapDirEntry* e = find_entry(plan.entries, name);
      if (e->table_offset) co_await co_free_bitmap_table(d, *e);
    }
    (void)co_await d.co_flush_all_metadata();
    co_return r;
  }
  on_disk_ = plan.entries;
  for (const BitmapDirEntry& old : plan.dropped) co_await co_free_bitmap_table(d, old);
  co_return co_await d.co_flush_all_metadata();
}

Task<Result<void>> Qcow2BitmapStore::co_mark_in_use(bool make_writable) {
  Qcow2Driver& d = driver();
  CoMutex& lock = d.metadata_lock();
  co_await lock.co_lock();
  CoMutex::Guard guard(&lock);
  STRATA_CO_TRY_ASSIGN(BitmapDirectory dir,
                       co_await co_read_bitmap_directory(d.header(), *d.file()));
  std::vector<DirtyBitmap*> bitmaps;
  bool changed = false;
  for (const BitmapDirEntry& e : dir.entries) {
    DirtyBitmap* b = node_.bitmaps().find(e.name);
    if (!b) {
      co_return Error{EINVAL, "Unexpected bitmap '" + e.name + "' in image '" + d.filename() + "'"};
    }
    if (!e.in_use() && b->inconsistent()) {
      co_return Error{EINVAL, "Corruption: bitmap '" + e.name +
                                  "' is inconsistent but is not marked IN_USE in the image '" +
                                  d.filename() + "'"};
    }
    changed = changed || !e.in_use();
    bitmaps.push_back(b);
  }
  if (changed) STRATA_CO_TRY(co_await co_mark_directory_in_use(d.header(), *d.file(), dir));
  on_disk_ = std::move(dir.entries);
  if (make_writable) {
    for (DirtyBitmap* b : bitmaps) b->set_read_only(false);
  }
  co_return Result<void>{};
}

void set_qcow2_bitmaps_read_only(Node& node) {
  BitmapSet* set = node.bitmaps_if_any();
  if (!set) return;
  for (DirtyBitmap* b : set->all()) {
    if (b->persistent()) b->set_read_only(true);
  }
}

Task<Result<void>> co_mark_qcow2_bitmaps_in_use(Node& node, bool make_writable) {
  auto* store = dynamic_cast<Qcow2BitmapStore*>(bitmap_store_of(node));
  if (!store) co_return Result<void>{};
  co_return co_await store->co_mark_in_use(make_writable);
}

Task<Result<void>> co_check_qcow2_bitmaps_resizable(Node& node) {
  auto& d = static_cast<Qcow2Driver&>(node.driver());
  if (!d.header().find_extension(kExtBitmaps)) co_return Result<void>{};
  CoMutex& lock = d.metadata_lock();
  co_await lock.co_lock();
  CoMutex::Guard guard(&lock);
  STRATA_CO_TRY_ASSIGN(BitmapDirectory dir,
                       co_await co_read_bitmap_directory(d.header(), *d.file()));
  for (const BitmapDirEntry& e : dir.entries) {
    BitmapSet* set = node.bitmaps_if_any();
    DirtyBitmap* b = set ? set->find(e.name) : nullptr;
    if (!b) {
      co_return Error{
          ENOTSUP, "Cannot resize qcow2 with persistent bitmaps that were not loaded into memory"};
    }
    STRATA_CO_TRY(b->check(kBitmapDefault));
  }
  co_return Result<void>{};
}

Task<Result<void>> co_store_qcow2_bitmaps(Node& node) {
  BitmapStore* store = bitmap_store_of(node);
  if (!store) co_return Result<void>{};
  auto r = co_await store->co_store_bitmaps();
  if (!r) {
    node.engine().logger().error("Lost persistent bitmaps during inactivation of node '" +
                                 node.name() + "': " + r.error().message);
  }
  co_return r;
}

nlohmann::json qcow2_bitmaps_info(const Node& node) {
  auto* store = dynamic_cast<Qcow2BitmapStore*>(bitmap_store_of(node));
  if (!store || store->on_disk().empty()) return nullptr;
  nlohmann::json list = nlohmann::json::array();
  for (const BitmapDirEntry& e : store->on_disk()) {
    nlohmann::json flags = nlohmann::json::array();
    if (e.in_use()) flags.push_back("in-use");
    if (e.auto_flag()) flags.push_back("auto");
    list.push_back(
        {{"name", e.name}, {"granularity", uint64_t{1} << e.granularity_bits}, {"flags", flags}});
  }
  return list;
}

}  // namespace strata::qcow2
