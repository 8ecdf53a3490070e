// qcow2: opening, header updates, flush, close and registration.
#include <algorithm>
#include <array>
#include <cstring>

#include "base/fs.h"
#include "block/core/driver_registry.h"
#include "block/core/filename.h"
#include "block/drivers/qcow2/bitmap_load.h"
#include "block/drivers/qcow2/bitmap_store.h"
#include "block/drivers/qcow2/check.h"
#include "block/drivers/qcow2/qcow2.h"

namespace strata::qcow2 {

namespace {
constexpr uint64_t kMaxDefaultL2Cache = 128ull << 20;  // the whole L2 of 1 TiB at 64 KiB

Task<void> co_write_incompat_bits(Child* file, std::array<uint8_t, 8> bytes) {
  (void)co_await file->co_pwrite(72, {bytes.data(), 8});
  (void)co_await file->co_flush();
}
}  // namespace

Qcow2Driver::Qcow2Driver() = default;
Qcow2Driver::~Qcow2Driver() = default;

Task<Result<void>> Qcow2Driver::co_read_header() {
  uint64_t file_size = file_->node()->size();
  uint64_t first = std::min<uint64_t>(file_size, 4096);
  AlignedBuffer probe(4096);
  std::memset(probe.data(), 0, 4096);
  STRATA_CO_TRY(co_await file_->co_preadv(0, IoVec(probe.data(), first), 0));
  if (first < kV2HeaderLength || load_be32(probe.data()) != kMagic) {
    co_return Error{EINVAL, "Image is not in qcow2 format"};
  }
  uint32_t bits = load_be32(probe.data() + 20);
  if (bits < kMinClusterBits || bits > kMaxClusterBits) {
    co_return Error{EINVAL, "Unsupported cluster size: 2^" + std::to_string(bits)};
  }
  uint64_t cs = uint64_t(1) << bits;
  AlignedBuffer cluster0(cs);
  std::memset(cluster0.data(), 0, cs);
  STRATA_CO_TRY(co_await file_->co_preadv(0, IoVec(cluster0.data(), std::min(cs, file_size)), 0));
  STRATA_CO_TRY_ASSIGN(header_, parse_header(cluster0.span()));
  uint64_t unknown = header_.incompatible_features & ~kIncompatKnown;
  if (unknown)
    co_return Error{ENOTSUP,
                    "Unsupported qcow2 feature(s): " + describe_unknown_incompat(header_, unknown)};
  cluster_bits_ = header_.cluster_bits;
  l2_bits_ = header_.l2_bits();
  l2fmt_ =
      L2Format{cluster_bits_, header_.extended_l2(), header_.has_data_file(), header_.version >= 3};
  co_return Result<void>{};
}

Task<Result<void>> Qcow2Driver::co_load_l1() {
  l1_.assign(header_.l1_size, 0);
  if (header_.l1_size == 0) co_return Result<void>{};
  AlignedBuffer buf(uint64_t(header_.l1_size) * 8);
  STRATA_CO_TRY(co_await file_->co_preadv(header_.l1_table_offset, buf.iov(), 0));
  for (size_t i = 0; i < l1_.size(); i++) {
    uint64_t e = load_be64(buf.data() + i * 8);
    // A check reports (and counts) unaligned tables instead (check_walk.cc).
    if ((e & kOffsetMask) % cluster_size() && !check_mode_) {
      co_return signal_corruption("L2 table offset " + std::to_string(e & kOffsetMask) +
                                  " unaligned (L1 index: " + std::to_string(i) + ")");
    }
    l1_[i] = e;
  }
  co_return Result<void>{};
}

// The table's place is checked here, not with the rest of the header: a
// check reads (and repairs) the table itself (check_snapshots.cc).
Task<Result<void>> Qcow2Driver::co_load_snapshots() {
  snapshots_.clear();
  if (header_.nb_snapshots > 65536) co_return Error{EINVAL, "Snapshot table too large"};
  if (header_.nb_snapshots && header_.snapshots_offset % cluster_size()) {
    co_return Error{EINVAL, "Snapshot table offset invalid"};
  }
  uint64_t pos = header_.snapshots_offset;
  constexpr uint64_t kMaxTable = 64ull << 20;
  for (uint32_t i = 0; i < header_.nb_snapshots; i++) {
    uint8_t fixed[40];
    STRATA_CO_TRY(co_await file_->co_preadv(pos, IoVec(fixed, sizeof fixed), 0));
    uint64_t need =
        40 + uint64_t(load_be32(fixed + 36)) + load_be16(fixed + 12) + load_be16(fixed + 14);
    if (pos + need - header_.snapshots_offset > kMaxTable) {
      co_return Error{EFBIG, "Snapshot table too large"};
    }
    std::vector<uint8_t> entry(need);
    STRATA_CO_TRY(co_await file_->co_preadv(pos, IoVec(entry.data(), need), 0));
    STRATA_CO_TRY_ASSIGN(auto one, parse_snapshot_table(entry, 1));
    snapshots_.push_back(std::move(one[0]));
    pos += round_up(need, 8);
  }
  snapshot_table_bytes_ = pos - header_.snapshots_offset;
  co_return Result<void>{};
}

Result<void> Qcow2Driver::apply_cache_options(const nlohmann::json& o) {
  uint64_t cs = cluster_size();
  uint64_t coverage = cs * l2fmt_.entries_per_table();
  uint64_t needed = std::max<uint64_t>(div_round_up(header_.size, coverage), 1) * cs;
  uint64_t l2_bytes = std::min(needed, std::max(kMaxDefaultL2Cache, cs * 2));
  uint64_t rc_bytes = std::max<uint64_t>(4 * cs, 256 * 1024);
  bool has_total = o.contains("cache-size");
  bool has_l2 = o.contains("l2-cache-size");
  bool has_rc = o.contains("refcount-cache-size");
  if (has_total && has_l2 && has_rc) {
    return Error{
        EINVAL,
        "cache-size, l2-cache-size and refcount-cache-size may not be set at the same time"};
  }
  if (has_l2) l2_bytes = uint64_t(opt_int(o, "l2-cache-size", 0));
  if (has_rc) rc_bytes = uint64_t(opt_int(o, "refcount-cache-size", 0));
  if (has_total) {
    uint64_t total = uint64_t(opt_int(o, "cache-size", 0));
    if (!has_l2 && !has_rc) {
      l2_bytes = std::min(needed, total > 4 * cs ? total - 4 * cs : cs * 2);
      rc_bytes = total > l2_bytes ? total - l2_bytes : 4 * cs;
    } else if (has_l2) {
      if (l2_bytes > total) return Error{EINVAL, "l2-cache-size may not exceed cache-size"};
      rc_bytes = total - l2_bytes;
    } else {
      if (rc_bytes > total) return Error{EINVAL, "refcount-cache-size may not exceed cache-size"};
      l2_bytes = total - rc_bytes;
    }
  }
  l2_cache_ = std::make_unique<MetadataCache>(cs, std::max<uint64_t>(l2_bytes / cs, 2));
  refcounts_ = std::make_unique<Refcounts>(cluster_bits_, header_.refcount_order,
                                           std::max<uint64_t>(rc_bytes / cs, 4));
  return {};
}

Task<Result<void>> Qcow2Driver::co_open_backing(OpenContext& ctx) {
  if (ctx.options().contains("backing")) {
    STRATA_CO_TRY(co_await ctx.co_open_child("backing", kRoleCow, false));
    co_return Result<void>{};
  }
  if (header_.backing_file.empty()) co_return Result<void>{};
  // The name as QEMU resolves it (relative to this image's directory unless
  // it is absolute or names a protocol: nbd://..., json:{...}).
  auto path = backing_filename(file_->node()->driver().filename(), header_.backing_file);
  if (!path)
    co_return Error{path.error().code, "Could not open backing file: " + path.error().message};
  auto opts =
      co_await co_filename_options(*loop_, ctx.graph().drivers(), *path, header_.backing_format);
  if (!opts)
    co_return Error{opts.error().code, "Could not open backing file: " + opts.error().message};
  auto child = co_await ctx.co_open_child_with("backing", *opts, kRoleCow);
  if (!child) {
    co_return Error{child.error().code, "Could not open backing file: " + child.error().message};
  }
  co_return Result<void>{};
}

Task<Result<void>> Qcow2Driver::co_open(OpenContext& ctx) {
  auto r = co_await co_open_image(ctx);
  if (!r && corrupt_bit_writes_) co_await corrupt_bit_writes_->co_join();
  co_return r;
}

Task<Result<void>> Qcow2Driver::co_open_image(OpenContext& ctx) {
  loop_ = &ctx.loop();
  lock_ = std::make_unique<CoMutex>(*loop_);
  STRATA_CO_TRY_ASSIGN(file_, co_await ctx.co_open_child("file", kRoleImage, true));
  STRATA_CO_TRY(co_await co_read_header());
  writable_ = !node().read_only();
  check_mode_ = opt_bool(ctx.options(), "x-check", false);
  no_data_file_ = opt_bool(ctx.options(), "x-no-data-file", false);
  STRATA_CO_TRY_ASSIGN(overlap_checks_, parse_overlap_checks(ctx.options()));
  if (header_.incompatible_features & kIncompatCorrupt && writable_ && !check_mode_) {
    co_return Error{EACCES, "qcow2: Image is corrupt; cannot be opened read/write"};
  }
  STRATA_CO_TRY(apply_cache_options(ctx.options()));
  l2_cache_->set_file(file_);
  l2_cache_->set_before_writeback([this] { return co_l2_barrier(); });
  install_write_checks();
  STRATA_CO_TRY(co_await co_load_l1());
  // As QEMU: a check reads the snapshot table itself, where a broken one
  // is reported or repaired rather than refused (check_snapshots.cc).
  if (!check_mode_) STRATA_CO_TRY(co_await co_load_snapshots());
  STRATA_CO_TRY(co_await co_load_inactive_l2());
  STRATA_CO_TRY(co_await refcounts_->co_load(file_, header_.refcount_table_offset,
                                             header_.refcount_table_clusters, check_mode_));
  lazy_refcounts_ = header_.compatible_features & kCompatLazyRefcounts;
  if (ctx.options().contains("lazy-refcounts")) {
    lazy_refcounts_ = opt_bool(ctx.options(), "lazy-refcounts", lazy_refcounts_);
    if (lazy_refcounts_ && header_.version < 3) {
      co_return Error{
          EINVAL,
          "Lazy refcounts require a qcow2 image with at least qemu 1.1 compatibility level"};
    }
  }
  STRATA_CO_TRY(co_await co_open_data_file(ctx));
  STRATA_CO_TRY(co_await co_open_backing(ctx));
  if ((header_.incompatible_features & kIncompatDirty) && writable_ && !check_mode_) {
    STRATA_CO_TRY(co_await co_repair_dirty());
  }
  if (writable_ && (header_.autoclear_features & ~kAutoclearKept)) {
    header_.autoclear_features &= kAutoclearKept;
    STRATA_CO_TRY(co_await co_write_header());
  }
  // Persistent dirty bitmaps (block/drivers/qcow2/bitmap_load.h).
  if (!check_mode_) STRATA_CO_TRY(co_await co_open_qcow2_bitmaps(node()));
  co_return Result<void>{};
}

// A dirty image (lazy refcounts, not closed cleanly) may have refcounts
// that are too low: rebuild them before writing, as QEMU does.
Task<Result<void>> Qcow2Driver::co_repair_dirty() {
  STRATA_CO_TRY_ASSIGN(CheckResult res, co_await co_check(*this, kFixLeaks | kFixErrors));
  if (res.corruptions || res.check_errors || res.aborted) {
    co_return Error{EIO, "qcow2: Could not repair dirty image"};
  }
  co_return co_await co_set_dirty_bit(false);
}

Task<Result<void>> Qcow2Driver::co_mark_repaired() {
  if (!writable_) co_return Result<void>{};
  STRATA_CO_TRY(co_await co_flush_metadata());
  STRATA_CO_TRY(co_await file_->co_flush());
  uint64_t bits = header_.incompatible_features & ~(kIncompatDirty | kIncompatCorrupt);
  if (bits == header_.incompatible_features) co_return Result<void>{};
  header_.incompatible_features = bits;
  corrupt_ = false;
  uint8_t b[8];
  store_be64(b, bits);
  STRATA_CO_TRY(co_await file_->co_pwrite(72, {b, 8}));
  co_return co_await file_->co_flush();
}

Task<Result<void>> Qcow2Driver::co_write_header() {
  STRATA_CO_TRY_ASSIGN(auto bytes, serialize_header(header_));
  STRATA_CO_TRY(check_metadata_write(0, cluster_size(), kMetaHeader));
  AlignedBuffer buf(cluster_size());
  std::memset(buf.data(), 0, cluster_size());
  std::memcpy(buf.data(), bytes.data(), bytes.size());
  STRATA_CO_TRY(co_await file_->co_pwritev(0, buf.iov(), 0));
  co_return co_await file_->co_flush();
}

Task<Result<void>> Qcow2Driver::co_set_dirty_bit(bool dirty) {
  uint64_t want = dirty ? (header_.incompatible_features | kIncompatDirty)
                        : (header_.incompatible_features & ~kIncompatDirty);
  if (want == header_.incompatible_features || header_.version < 3) co_return Result<void>{};
  header_.incompatible_features = want;
  uint8_t b[8];
  store_be64(b, want);
  STRATA_CO_TRY(co_await file_->co_pwrite(72, {b, 8}));
  co_return co_await file_->co_flush();
}

Error Qcow2Driver::signal_corruption(const std::string& what) {
  std::string msg =
      "qcow2: Marking image as corrupt: " + what + "; further corruption events will be suppressed";
  if (writable_ && !corrupt_) {
    corrupt_ = true;
    header_.incompatible_features |= kIncompatCorrupt;
    uint8_t b[8];
    store_be64(b, header_.incompatible_features);
    // Best effort, not waited for: the request fails either way.
    if (!corrupt_bit_writes_) corrupt_bit_writes_ = std::make_unique<TaskGroup>(*loop_);
    corrupt_bit_writes_->spawn(co_write_incompat_bits(
        file_, std::array<uint8_t, 8>{b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]}));
  }
  return Error{EIO, msg};
}

// Refcount increases reach the disk before any L2 table that may reference
// them, and so does copy-on-write data.
Task<Result<void>> Qcow2Driver::co_l2_barrier() {
  STRATA_CO_TRY(co_await refcounts_->co_flush());
  if (data_file_ && data_file_ != file_) STRATA_CO_TRY(co_await data_file_->co_flush());
  co_return co_await file_->co_flush();
}

Task<void> Qcow2Driver::co_discard_freed() {
  if (corrupt_) {
    refcounts_->forget_freed();
    co_return;
  }
  co_await refcounts_->co_discard_freed();
}

Task<Result<void>> Qcow2Driver::co_flush_metadata() {
  STRATA_CO_TRY(co_await refcounts_->co_flush());
  STRATA_CO_TRY(co_await l2_cache_->co_flush());
  if (refcounts_->has_pending_frees()) {
    STRATA_CO_TRY(co_await file_->co_flush());
    STRATA_CO_TRY(co_await refcounts_->co_apply_pending_frees());
    STRATA_CO_TRY(co_await refcounts_->co_flush());
  }
  co_await co_discard_freed();
  co_return Result<void>{};
}

Task<Result<void>> Qcow2Driver::co_flush() {
  if (!writable_ || !l2_cache_) co_return Result<void>{};
  co_await lock_->co_lock();
  CoMutex::Guard guard(lock_.get());
  co_return co_await co_flush_metadata();
}

Task<void> Qcow2Driver::co_close() {
  if (corrupt_bit_writes_) co_await corrupt_bit_writes_->co_join();
  if (!writable_ || !l2_cache_ || corrupt_) co_return;
  // Persistent dirty bitmaps go back to the image first (bitmap_store.h).
  (void)co_await co_store_qcow2_bitmaps(node());
  co_await lock_->co_lock();
  CoMutex::Guard guard(lock_.get());
  auto r = co_await co_flush_metadata();
  if (r) r = co_await file_->co_flush();
  if (r && (header_.incompatible_features & kIncompatDirty)) (void)co_await co_set_dirty_bit(false);
}

Limits Qcow2Driver::limits() const {
  Limits l;
  l.request_alignment = 1;
  // As QEMU: zeroes by subcluster (the unaligned head and tail of a request
  // are offered first: they become zero subclusters when the rest of theirs
  // already reads as zeroes), discards by cluster.
  l.zeroes_alignment = uint32_t(subcluster_size());
  l.try_unaligned_zeroes = true;
  l.discard_alignment = uint32_t(cluster_size());
  l.opt_transfer = cluster_size();
  return l;
}

nlohmann::json Qcow2Driver::format_specific() const {
  nlohmann::json data = {{"compat", header_.version >= 3 ? "1.1" : "0.10"},
                         {"compression-type", header_.compression_type == 1 ? "zstd" : "zlib"}};
  if (header_.version >= 3) {
    data["lazy-refcounts"] = bool(header_.compatible_features & kCompatLazyRefcounts);
    if (auto bitmaps = qcow2_bitmaps_info(node()); !bitmaps.is_null()) data["bitmaps"] = bitmaps;
  }
  data["refcount-bits"] = header_.refcount_bits();
  if (!header_.data_file.empty()) data["data-file"] = header_.data_file;
  if (external_data()) data["data-file-raw"] = header_.data_file_raw();
  if (header_.version >= 3) {
    data["corrupt"] = bool(header_.incompatible_features & kIncompatCorrupt);
    data["extended-l2"] = header_.extended_l2();
  }
  return {{"type", "qcow2"}, {"data", data}};
}

}  // namespace strata::qcow2

namespace strata {

void register_qcow2_driver(DriverRegistry& registry) {
  registry.add(DriverSpec{"qcow2",
                          DriverKind::kFormat,
                          {{"file", OptType::kChild, true},
                           {"backing", OptType::kChildOrNull},
                           {"lazy-refcounts", OptType::kBool},
                           {"pass-discard-request", OptType::kBool},
                           {"pass-discard-snapshot", OptType::kBool},
                           {"pass-discard-other", OptType::kBool},
                           {"overlap-check", OptType::kAny},
                           {"cache-size", OptType::kInt},
                           {"l2-cache-size", OptType::kInt},
                           {"l2-cache-entry-size", OptType::kInt},
                           {"refcount-cache-size", OptType::kInt},
                           {"cache-clean-interval", OptType::kInt},
                           {"data-file", OptType::kChild},
                           {"x-check", OptType::kBool},
                           {"x-no-data-file", OptType::kBool}},
                          [] { return std::make_unique<qcow2::Qcow2Driver>(); }});
}

}  // namespace strata
