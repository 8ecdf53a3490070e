// ReferenceWalk: the first half of qcow2 check (QEMU's
// calculate_refcounts): every reference to a host cluster counted in
// memory, from the header, the active and snapshot L1/L2 tables, the
// snapshot table, the refcount table and blocks and the bitmaps.
//
// Contract: as QEMU, a reference to a region that runs one cluster or more
// past the end of the file is a corruption and is not counted, so the
// counts cover the file (plus at most its partial last cluster) and memory
// stays bounded by the file size; a truncated image is found corrupt.
// Entries with reserved bits, unaligned tables and clusters, and refcount
// blocks that are damaged are reported as qemu-img reports them; with
// kFixErrors, preallocated zero clusters at unaligned offsets become plain
// zero clusters (QEMU's fix_l2_entry_by_zero). `rebuild` is set when the
// refcount structure itself is damaged. An Error means the walk could not
// go on (an I/O error reading metadata; also counted as a check error).
// Thread rules: loop-thread only, under the image's metadata lock.
#pragma once

#include <cstdint>
#include <vector>

#include "block/drivers/qcow2/check.h"
#include "block/drivers/qcow2/check_l2.h"

namespace strata::qcow2 {

class ReferenceWalk {
 public:
  ReferenceWalk(Qcow2Driver& d, CheckResult& res, int fix)
      : d_(d), res_(res), fix_(fix), cs_(d.header().cluster_size()), bits_(d.cluster_bits()) {}

  Task<Result<void>> co_run(bool& rebuild);
  // refs()[c]: references to host cluster c; its size is QEMU's nb_clusters.
  const std::vector<uint64_t>& refs() const { return refs_; }
  // The counts without the refcount table and blocks themselves.
  std::vector<uint64_t> refs_without_refcount_structure() const;

 private:
  // Counts [offset, offset + bytes); false (a corruption) when the region
  // runs a cluster or more past the end of the file.
  bool add(uint64_t offset, uint64_t bytes);
  void check_refblocks(bool& rebuild);
  void check_refblock(uint64_t index, bool& rebuild);
  Task<Result<void>> co_walk_snapshots();
  Task<Result<void>> co_walk_l1(uint64_t l1_offset, uint32_t l1_size, bool active);
  Task<Result<void>> co_walk_l2(uint64_t l2_offset, bool active);
  void report(const EntryCheck& check);
  // Reports a COPIED flag on a compressed entry; the entry without it.
  uint64_t check_compressed_copied(uint64_t entry);
  void count_compressed(uint64_t entry, bool active);
  void count_data(uint64_t offset, bool active);
  // An allocated entry whose offset is not cluster aligned; true when it
  // was repaired (and must not be counted).
  Task<Result<bool>> co_unaligned_entry(uint64_t l2_offset, uint64_t i, uint64_t entry,
                                        bool active);
  Task<Result<bool>> co_fix_entry_by_zero(uint64_t l2_offset, uint64_t i, bool active);
  Task<Result<void>> co_walk_bitmaps();
  Task<Result<void>> co_read(uint64_t offset, std::vector<uint8_t>& buf, const char* what);
  void message(std::string m) { res_.messages.push_back(std::move(m)); }

  Qcow2Driver& d_;
  CheckResult& res_;
  int fix_;
  uint64_t cs_;
  uint32_t bits_;
  uint64_t file_size_ = 0;
  std::vector<uint64_t> refs_;
  uint64_t next_contiguous_ = 0;
  std::vector<uint64_t> refcount_clusters_;  // clusters counted for the refcount structure
};

// printf into a std::string (the messages are qemu-img's).
std::string check_format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

}  // namespace strata::qcow2
