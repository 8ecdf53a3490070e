// Qcow2Driver: the qcow2 format (v2 and v3) as a node driver.
//
// Contract: reads and writes go through the L1/L2 mapping with an L2 cache
// and refcounts (block/drivers/qcow2/refcount.h). Allocating writes follow
// QEMU's crash-safe order: the data (with copy-on-write head and tail from
// the old cluster or the backing file) is written, refcount increases reach
// the disk before the L2 entries that reference the new clusters, and
// clusters are freed only after the references to them are gone on disk, so
// a crash can only leak clusters. Metadata changes take a short metadata
// lock; data reads and writes run outside it, so reads never wait for
// unrelated allocations and allocating writes to different clusters overlap.
// Writes to clusters with an allocation in flight wait for it. Unknown header
// extensions (and the bitmaps extension) are preserved on header rewrites;
// unknown autoclear bits are cleared on a writable open. Detected metadata
// corruption sets the corrupt bit (writable nodes) and fails the request.
// Extended L2 entries (subclusters), zstd compression and an external data
// file (the `data-file` child; guest data at the guest offset, no
// refcounts) are supported as QEMU writes them.
// Thread rules: loop-thread only.
#pragma once

#include <list>
#include <memory>
#include <optional>
#include <vector>

#include "base/sync.h"
#include "block/core/graph.h"
#include "block/core/image_ops.h"
#include "block/drivers/qcow2/cache.h"
#include "block/drivers/qcow2/format.h"
#include "block/drivers/qcow2/l2_entry.h"
#include "block/drivers/qcow2/refcount.h"
#include "block/drivers/qcow2/refcount_rebuild.h"
#include "block/drivers/qcow2/snapshot.h"

namespace strata::qcow2 {

struct CheckResult;

// Metadata structures, for overlap checks (QEMU's Qcow2OverlapCheckFlags,
// in the same order).
enum MetadataKind : unsigned {
  kMetaHeader = 1u << 0,
  kMetaActiveL1 = 1u << 1,
  kMetaActiveL2 = 1u << 2,
  kMetaRefcountTable = 1u << 3,
  kMetaRefcountBlock = 1u << 4,
  kMetaSnapshotTable = 1u << 5,
  kMetaInactiveL1 = 1u << 6,
  kMetaInactiveL2 = 1u << 7,
  kMetaBitmapDirectory = 1u << 8,
};

// The kinds each overlap-check mode checks, as QEMU.
constexpr unsigned kOverlapConstant = kMetaHeader | kMetaActiveL1 | kMetaRefcountTable |
                                      kMetaSnapshotTable | kMetaInactiveL1 | kMetaBitmapDirectory;
constexpr unsigned kOverlapCached = kOverlapConstant | kMetaActiveL2 | kMetaRefcountBlock;
constexpr unsigned kOverlapAll = kOverlapCached | kMetaInactiveL2;

// The kinds the qcow2 option `overlap-check` selects (a mode string, or an
// object with `template` and per-kind booleans); cached when absent.
Result<unsigned> parse_overlap_checks(const nlohmann::json& options);

// Where a run of guest bytes lives: subclusters of one type, contiguous in
// the data file where they have host clusters.
struct Mapping {
  ClusterType type = ClusterType::kUnallocated;
  uint64_t entry = 0;        // raw L2 entry of the first cluster
  uint64_t host_offset = 0;  // host byte of the first guest byte (types with a host cluster)
  uint64_t bytes = 0;        // length of the run sharing this mapping
};

// A run of guest clusters whose allocation is in flight: other writes to
// them wait until the L2 entries are updated.
struct InflightAlloc {
  InflightAlloc(Loop& loop, uint64_t first, uint64_t count)
      : first_cluster(first), clusters(count), done(loop) {}
  uint64_t first_cluster;
  uint64_t clusters;
  CoQueue done;
};

// A write that changes L2 entries (QEMU's QCowL2Meta): the guest clusters it
// covers and their host clusters, the region of them it writes (from byte
// `start` of the first cluster: `head` bytes copied from the old content,
// the data, `tail` bytes copied), whether it keeps the clusters (allocated
// and owned; only subclusters change) or links new ones, and whether the
// copied parts read as zeroes (they are then zeroed by the file).
struct CowPlan {
  uint64_t first_cluster = 0;
  uint64_t clusters = 0;
  uint64_t host = 0;  // host offset of the first cluster
  uint64_t start = 0;
  uint64_t head = 0;
  uint64_t tail = 0;
  bool keep_old = false;
  bool zero_cow = false;
  std::vector<L2Entry> old;  // entries before the write (new allocations free them)
};

// What strata-img amend may change; unset fields keep their value.
struct AmendOptions {
  std::optional<uint32_t> version;  // 2 (compat=0.10) or 3 (compat=1.1)
  std::optional<bool> lazy_refcounts;
  std::optional<uint32_t> refcount_bits;
  std::optional<std::string> data_file;  // a new name ("" drops it); data file images only
  std::optional<bool> data_file_raw;     // may be turned off, not on
};

class Qcow2Driver final : public Driver, public ImageOps {
 public:
  Qcow2Driver();
  ~Qcow2Driver() override;
  ImageOps* image_ops() override { return this; }
  bool supports_compressed_writes() const override { return true; }
  std::vector<SnapshotEntry> list_snapshots() const override;
  std::string backing_file_name() const override { return header_.backing_file; }
  std::string backing_format_name() const override { return header_.backing_format; }
  bool dirty_flag() const override { return header_.incompatible_features & kIncompatDirty; }

  Task<Result<void>> co_open(OpenContext& ctx) override;
  Task<void> co_close() override;
  Task<Result<void>> co_preadv(uint64_t offset, const IoVec& iov, uint32_t flags) override;
  // qcow2_splice.cc.
  Task<Result<void>> co_splice_read(uint64_t offset, uint64_t bytes, Pipe& pipe) override;
  Task<Result<void>> co_pwritev(uint64_t offset, const IoVec& iov, uint32_t flags) override;
  Task<Result<void>> co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) override;
  Task<Result<void>> co_pdiscard(uint64_t offset, uint64_t bytes) override;
  Task<Result<void>> co_flush() override;
  Task<Result<BlockStatus>> co_block_status(uint64_t offset, uint64_t bytes) override;
  Task<Result<void>> co_truncate(uint64_t size, bool exact, Preallocation prealloc) override;
  uint64_t size() const override { return header_.size; }
  Limits limits() const override;
  nlohmann::json format_specific() const override;
  bool supports_backing() const override { return true; }
  // blockdev-reopen read-only <-> read-write (qcow2_reopen.cc).
  Task<Result<void>> co_reopen_prepare(const NodeFlags& flags) override;
  void reopen_commit() override;
  Task<void> co_reopen_finish(bool committed) override;

  const Header& header() const { return header_; }
  Child* file() const { return file_; }
  // The node's current backing child (it may be attached or replaced after
  // open, e.g. by QMP blockdev-snapshot), never one captured at open.
  Child* backing() const { return node().backing(); }
  const std::vector<Snapshot>& snapshots() const { return snapshots_; }
  // For check and repair (check.cc): the metadata, under the metadata lock.
  const std::vector<uint64_t>& l1() const { return l1_; }
  Refcounts& refcounts() { return *refcounts_; }
  MetadataCache& l2_cache() { return *l2_cache_; }
  CoMutex& metadata_lock() { return *lock_; }
  Task<Result<void>> co_flush_all_metadata() { return co_flush_metadata(); }
  Task<Result<void>> co_set_l1_entry(uint64_t index, uint64_t entry);
  uint32_t cluster_bits() const { return cluster_bits_; }
  const L2Format& l2_format() const { return l2fmt_; }
  // The child holding guest data: the external data file, or `file`.
  Child* data_file() const { return data_file_; }
  // Internal snapshots (snapshot_ops.cc); the node must be drained.
  Task<Result<void>> co_snapshot_create(std::string name, int64_t icount) override;
  Task<Result<void>> co_snapshot_apply(std::string name_or_id) override;
  Task<Result<void>> co_snapshot_delete(std::string name_or_id) override;
  Task<Result<void>> co_snapshot_load_tmp(std::string id, std::string name) override;
  // Whole-image changes (qcow2_amend.cc); the node must be drained.
  // Makes every cluster of the active layer unallocated (commit).
  Task<Result<void>> co_make_empty() override;
  // Rewrites the backing file name and format in the header (rebase).
  Task<Result<void>> co_change_backing_file(std::string file, std::string format) override;
  Task<Result<void>> co_amend(AmendOptions options);
  // Allocates every cluster of guest range [from, to) not allocated yet
  // (qcow2_prealloc.cc): metadata only, or with falloc/full host space.
  Task<Result<void>> co_preallocate(uint64_t from, uint64_t to, Preallocation mode);
  // Points the header at a refcount structure written by
  // co_write_refcount_structure() (refcount_rebuild.h), with entries of
  // 2^order bits, and reloads the refcounts from it. Pending frees and
  // cached blocks of the old structure are dropped.
  Task<Result<void>> co_install_refcounts(RefcountStructure s, uint32_t order);
  // After a repair that left no corruption: clears the dirty and corrupt bits.
  Task<Result<void>> co_mark_repaired();
  // Check of the snapshot table (check_snapshots.cc; QEMU's
  // qcow2_check_read_snapshot_table and qcow2_check_fix_snapshot_table):
  // reads it again from the file, cutting down what cannot be kept when
  // `fix` has kFixErrors, then, after the refcount check, writes a table
  // whose entries needed repair anew.
  Task<Result<void>> co_check_snapshot_table(int fix, CheckResult& res);
  Task<Result<void>> co_fix_snapshot_table(int fix, CheckResult& res);
  // Bytes of the snapshot table in the file.
  uint64_t snapshot_table_bytes() const { return snapshot_table_bytes_; }
  // For the bitmaps extension (bitmap_store.cc), under the metadata lock:
  // the in-memory header, and writing it out (synced).
  Header& mutable_header() { return header_; }
  Task<Result<void>> co_rewrite_header() { return co_write_header(); }
  // Refuses a write of new metadata (snapshot or bitmap structures) at
  // [offset, offset + bytes) that would overlap metadata of the kinds
  // overlap-check selects, other than those in `ignore`, and marks the
  // image corrupt (qcow2_overlap.cc).
  Result<void> check_metadata_write(uint64_t offset, uint64_t bytes, unsigned ignore = 0);

 private:
  // Open helpers (qcow2_open.cc).
  Task<Result<void>> co_read_header();
  Task<Result<void>> co_load_l1();
  Task<Result<void>> co_load_snapshots();
  Task<Result<void>> co_open_backing(OpenContext& ctx);
  Task<Result<void>> co_open_image(OpenContext& ctx);
  Result<void> apply_cache_options(const nlohmann::json& o);
  Task<Result<void>> co_write_header();
  Task<Result<void>> co_repair_dirty();
  Task<Result<void>> co_set_dirty_bit(bool dirty);
  Task<Result<void>> co_flush_metadata();
  Task<Result<void>> co_l2_barrier();
  Error signal_corruption(const std::string& what);
  // Reopen helpers (qcow2_reopen.cc).
  Task<Result<void>> co_prepare_read_only();
  Task<Result<void>> co_flush_and_mark_clean();

  // External data file (data_file.cc).
  Task<Result<void>> co_open_data_file(OpenContext& ctx);
  bool external_data() const { return header_.has_data_file(); }

  // Mapping (qcow2_map.cc).
  uint64_t cluster_size() const { return uint64_t(1) << cluster_bits_; }
  uint64_t subcluster_size() const { return l2fmt_.subcluster_size(); }
  uint64_t l1_index(uint64_t off) const { return off >> (cluster_bits_ + l2_bits_); }
  uint64_t l2_index(uint64_t off) const {
    return (off >> cluster_bits_) & ((1ull << l2_bits_) - 1);
  }
  unsigned sc_index(uint64_t off) const {
    return unsigned(off >> l2fmt_.subcluster_bits()) & (l2fmt_.subclusters() - 1);
  }
  // The host cluster of an entry with one, checked (aligned; with an
  // external data file, at the guest offset of `guest_cluster`).
  Result<uint64_t> checked_host_offset(uint64_t entry);
  Result<uint64_t> checked_host_cluster(uint64_t entry, uint64_t guest_cluster);
  Error invalid_entry(uint64_t l1_idx, uint64_t l2_idx);
  Task<Result<std::shared_ptr<Table>>> co_l2_table(uint64_t l1_idx);
  Task<Result<std::shared_ptr<Table>>> co_writable_l2(uint64_t l1_idx);
  Task<Result<std::shared_ptr<Table>>> co_fill_new_l2(uint64_t l1_idx, uint64_t old_entry,
                                                      uint64_t fresh);
  Task<Result<void>> co_write_l1_entry(uint64_t l1_idx);
  Task<Result<void>> co_grow_l1(uint64_t min_size);
  Task<Result<Mapping>> co_map(uint64_t offset, uint64_t bytes);
  Result<void> count_run(uint64_t offset, uint64_t max_bytes, const Table& table, Mapping& m);
  // Queues the clusters of an L2 entry for freeing; with `discard` they are
  // discarded in the file once free.
  void free_cluster_entry(uint64_t entry, bool discard = false);
  Task<void> co_wait_inflight(uint64_t offset, uint64_t bytes);

  // Write-zeroes and discard (qcow2_zero.cc), under the metadata lock.
  Task<Result<bool>> co_reads_zero(uint64_t offset, uint64_t bytes);
  Task<Result<void>> co_zeroize(uint64_t offset, uint64_t bytes, uint32_t flags);
  Task<Result<void>> co_zero_clusters(uint64_t offset, uint64_t clusters, uint32_t flags);
  Task<Result<void>> co_zero_subclusters(uint64_t offset, unsigned count);
  // Whole clusters: a full discard makes them unallocated (reads go to the
  // backing file), otherwise they read as zeroes (v3).
  Task<Result<void>> co_discard_clusters(uint64_t offset, uint64_t bytes, bool full);
  // Discards guest ranges in the external data file (their mapping is gone).
  Task<Result<void>> co_discard_data(const std::vector<std::pair<uint64_t, uint64_t>>& ranges);
  // Discards the clusters freed with a discard request since the last
  // call (Refcounts::co_discard_freed), unless the image was found corrupt:
  // then a refcount may have lied and the cluster may hold live metadata,
  // so nothing is discarded.
  Task<void> co_discard_freed();
  Task<Result<bool>> co_detect_metadata_preallocation();
  Task<Result<void>> co_release_tail(uint64_t size);

  // Overlap checks (qcow2_overlap.cc): the metadata structure a write to
  // [offset, offset + bytes) would hit, or null, leaving out the kinds in
  // `ignore` (MetadataKind bits). Active L2 tables are those in the L2
  // cache, or with `all_l2` every table the active L1 names.
  // check_overlap() (data writes) and check_metadata_write() refuse such a
  // write and mark the image corrupt.
  const char* overlapping_metadata(uint64_t offset, uint64_t bytes, unsigned ignore,
                                   bool all_l2) const;
  Result<void> check_overlap(uint64_t offset, uint64_t bytes);
  // Marks the image corrupt for a write that would hit `what` (if not null).
  Result<void> refuse_write_on(const char* what);
  void install_write_checks();
  Task<Result<void>> co_load_inactive_l2();

  // Amend helpers (qcow2_amend.cc).
  Task<Result<void>> co_make_completely_empty();
  Task<Result<void>> co_downgrade();
  Task<Result<void>> co_expand_zero_clusters();
  Task<Result<bool>> co_find_entry(bool active, bool (*match)(uint64_t));
  Task<Result<bool>> co_snapshots_have_zero_clusters();
  Task<Result<void>> co_change_refcount_width(uint32_t bits);
  Result<void> check_amend_data_file(const AmendOptions& o) const;

  // Snapshot helpers (snapshot_ops.cc).
  Task<Result<std::vector<uint64_t>>> co_read_l1_table(uint64_t offset, uint32_t size);
  Task<Result<void>> co_update_tree_refcounts(std::vector<uint64_t> l1, int64_t delta);
  Task<Result<void>> co_rebuild_copied();
  Task<Result<void>> co_write_snapshot_table(std::vector<Snapshot> snapshots);
  Task<Result<void>> co_write_whole_l1();
  int find_snapshot(const std::string& name_or_id) const;

  // Data path (qcow2_io.cc).
  // How many of the `bytes` at `offset` the backing file holds (0 without
  // one); the rest of an unallocated range reads as zeroes.
  uint64_t backing_bytes(uint64_t offset, uint64_t bytes) const;
  // Guest data, mapped run by run (co_preadv without its checks).
  Task<Result<void>> co_read_guest(uint64_t offset, const IoVec& iov);
  Task<Result<void>> co_read_run(uint64_t offset, const Mapping& m, const IoVec& iov);
  Task<Result<void>> co_read_backing(uint64_t offset, const IoVec& iov);
  Task<Result<void>> co_read_compressed(uint64_t entry, uint64_t in_cluster, const IoVec& iov);
  // Splice reads (qcow2_splice.cc): one mapped run appended to the pipe.
  Task<Result<void>> co_splice_run(uint64_t offset, const Mapping& m, Pipe& pipe);
  Task<Result<void>> co_splice_backing(uint64_t offset, uint64_t bytes, Pipe& pipe);
  Task<Result<void>> co_splice_copied(uint64_t offset, const Mapping& m, Pipe& pipe);
  Task<Result<void>> co_write_compressed(uint64_t offset, const IoVec& iov);
  Task<Result<bool>> co_store_compressed(uint64_t offset, const uint8_t* data, size_t len);
  // Writes (qcow2_write.cc).
  Task<Result<uint64_t>> co_write_step(uint64_t offset, const IoVec& iov);
  Task<Result<uint64_t>> co_write_in_place(uint64_t offset, const IoVec& iov, const Table& table);
  Task<Result<uint64_t>> co_write_allocating(uint64_t offset, const IoVec& iov, const Table& table);
  Result<bool> plan_cow(uint64_t offset, uint64_t bytes, CowPlan& plan);
  uint64_t cow_start(uint64_t offset, const CowPlan& plan) const;
  uint64_t cow_end(uint64_t end, const CowPlan& plan) const;
  Task<Result<bool>> co_cow_reads_zero(const CowPlan& plan, uint64_t bytes);
  Task<Result<uint64_t>> co_write_planned(uint64_t offset, const IoVec& iov, CowPlan plan);
  Task<Result<void>> co_write_cow_data(uint64_t offset, const CowPlan& cow, const IoVec& iov);
  Task<Result<void>> co_link_l2(uint64_t offset, uint64_t bytes, const CowPlan& cow);

  Child* file_ = nullptr;
  Child* data_file_ = nullptr;  // the external data file, or file_
  L2Format l2fmt_;
  Loop* loop_ = nullptr;
  // The header writes signal_corruption starts without waiting for them;
  // joined by co_close and after a failed open, before `file_` goes away.
  std::unique_ptr<TaskGroup> corrupt_bit_writes_;
  Header header_;
  uint32_t cluster_bits_ = 16;
  uint32_t l2_bits_ = 13;
  bool writable_ = false;
  bool lazy_refcounts_ = false;
  bool corrupt_ = false;
  bool check_mode_ = false;    // opened for check/repair: corrupt images open writable
  bool no_data_file_ = false;  // x-no-data-file: metadata only (info), no guest data
  // Block status of data clusters asks the file which bytes read as zeroes
  // (co_detect_metadata_preallocation, decided at the first query).
  bool metadata_prealloc_checked_ = false;
  bool metadata_prealloc_ = false;
  unsigned overlap_checks_ = kOverlapCached;  // MetadataKind bits overlap-check selects
  std::vector<uint64_t> inactive_l2_;         // sorted; only when kMetaInactiveL2 is checked
  // The read-only change a blockdev-reopen has prepared, until it finishes.
  enum class ReopenChange { kNone, kToReadOnly, kToReadWrite } reopen_change_ = ReopenChange::kNone;
  uint64_t snapshot_table_bytes_ = 0;  // size of the snapshot table on disk
  std::vector<uint64_t> l1_;
  std::vector<Snapshot> snapshots_;
  std::unique_ptr<MetadataCache> l2_cache_;
  std::unique_ptr<Refcounts> refcounts_;
  std::unique_ptr<CoMutex> lock_;
  std::list<InflightAlloc*> inflight_;
};

}  // namespace strata::qcow2
