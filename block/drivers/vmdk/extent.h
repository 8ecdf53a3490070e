// One extent of a VMDK image: a flat range of a file, or a sparse file
// (grain directory, grain tables, grains, optionally compressed with
// markers as in stream-optimized images).
//
// Contract: an Extent covers guest sectors [end_sector - sectors,
// end_sector). co_lookup() maps a guest byte to its grain: a flat extent is
// one grain as large as the extent; in a sparse extent the grain directory
// is in memory and grain tables are loaded through a small cache. A grain
// table that lies past the end of its file is an error (EIO with the
// extent's file name), not zeroes; so is reading a grain that does
// (check_in_file), which QEMU would read as zeroes. co_read_compressed() inflates a
// grain (zlib, with or without a marker) and checks its sizes.
// Thread rules: loop-thread only. Lookups may run concurrently: tables in
// the cache are shared and stay valid for a lookup that holds them.
#pragma once

#include <list>
#include <memory>
#include <string>
#include <vector>

#include "block/core/node.h"
#include "block/drivers/vmdk/format.h"

namespace strata::vmdk {

enum class GrainKind { kUnallocated, kZeroed, kData, kCompressed };

struct Grain {
  GrainKind kind = GrainKind::kUnallocated;
  uint64_t host_offset = 0;  // bytes: the grain's start in the extent file
  uint64_t offset_in_grain = 0;
  uint64_t bytes_left = 0;  // from the looked-up byte to the end of the grain
};

class Extent {
 public:
  // A flat extent of `sectors` sectors at `start` bytes into `file`.
  static Extent flat(Child* file, std::string type, uint64_t sectors, uint64_t start);
  // A sparse extent with a grain directory already read.
  static Extent sparse(Child* file, std::string type, const SparseHeader& h,
                       std::vector<uint32_t> l1);

  Task<Result<Grain>> co_lookup(uint64_t offset_in_extent);
  // A data grain must start inside the file (reads fail otherwise).
  Result<void> check_in_file(const Grain& g) const;
  // Reads [offset_in_grain, + iov.size()) of a compressed grain into `iov`.
  Task<Result<void>> co_read_compressed(const Grain& g, const IoVec& iov);

  Child* file() const { return file_; }
  const std::string& type() const { return type_; }
  bool is_flat() const { return flat_; }
  bool compressed() const { return compressed_; }
  uint64_t sectors() const { return sectors_; }
  uint64_t grain_bytes() const { return grain_sectors_ * kSector; }
  uint64_t end_sector() const { return end_sector_; }
  void set_end_sector(uint64_t s) { end_sector_ = s; }
  uint64_t start_byte() const { return (end_sector_ - sectors_) * kSector; }
  uint64_t l1_entries() const { return l1_.size(); }

 private:
  using Table = std::shared_ptr<const std::vector<uint32_t>>;
  Task<Result<Table>> co_table(uint32_t l2_sector);
  std::string file_name() const;

  Child* file_ = nullptr;
  std::string type_;
  bool flat_ = false;
  bool compressed_ = false;
  bool markers_ = false;
  bool zero_grain_ = false;
  uint64_t sectors_ = 0;
  uint64_t end_sector_ = 0;
  uint64_t flat_start_ = 0;
  uint64_t grain_sectors_ = 0;
  uint32_t l2_entries_ = 0;
  std::vector<uint32_t> l1_;
  // Most recently used first; at most kCachedTables.
  std::list<std::pair<uint32_t, Table>> tables_;
  static constexpr size_t kCachedTables = 64;
};

}  // namespace strata::vmdk
