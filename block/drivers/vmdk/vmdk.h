// VmdkDriver: VMware VMDK images, read-only.
//
// Contract: opens what QEMU 7.2 opens: a sparse file (monolithicSparse,
// streamOptimized with compressed grains and its footer, VMDK3 "COWD"), or
// a text descriptor (monolithicFlat, twoGbMaxExtentSparse/Flat, vmfs,
// vmfsSparse) whose extents, relative to the descriptor's folder, are opened
// as children "extents.N"; a sparse file whose header points to an
// embedded descriptor is a descriptor. An extent may not itself be a
// descriptor (QEMU recurses; a descriptor naming itself would loop).
// seSparse extents are refused. The parent named by parentFileNameHint is
// opened as the backing file (format vmdk), as QEMU does; reads that need it
// fail when its CID is not this image's parentCID. Unallocated grains read
// from the backing file, or as zeroes; zeroed grains as zeroes. Block status
// as QEMU's: data with its offset in the extent file (compressed grains
// without one; flat extents recurse into the file), zero for zeroed grains,
// unallocated otherwise. Writes are refused (block/drivers/read_only.h).
// Thread rules: loop-thread only.
#pragma once

#include <optional>
#include <vector>

#include "block/core/graph.h"
#include "block/drivers/vmdk/descriptor.h"
#include "block/drivers/vmdk/extent.h"

namespace strata::vmdk {

class VmdkDriver final : public Driver {
 public:
  Task<Result<void>> co_open(OpenContext& ctx) override;
  Task<Result<void>> co_preadv(uint64_t offset, const IoVec& iov, uint32_t flags) override;
  Task<Result<BlockStatus>> co_block_status(uint64_t offset, uint64_t bytes) override;
  uint64_t size() const override;
  uint64_t cluster_size() const override;
  nlohmann::json format_specific() const override;
  bool supports_backing() const override { return true; }

  uint32_t cid() const { return cid_; }
  uint32_t parent_cid() const { return parent_cid_; }
  const std::string& create_type() const { return create_type_; }
  const std::vector<Extent>& extents() const { return extents_; }
  // The parent image named in the descriptor (empty when none).
  const std::string& backing_file() const { return backing_file_; }
  // QEMU's vmdk_co_get_info succeeds only when all extents are alike (flat,
  // or sparse with one grain size and compression); it then has a cluster
  // size (sparse) and a dirty flag to report.
  bool extents_alike() const;
  // The extent holding guest byte `offset`, or null past the last one.
  Extent* find_extent(uint64_t offset);

 private:
  // Opening (vmdk_open.cc).
  Task<Result<void>> co_open_top(OpenContext& ctx);
  Task<Result<void>> co_open_sparse(Child* file, const std::string& type, std::vector<uint8_t> head,
                                    OpenContext* ctx);
  Task<Result<void>> co_open_vmdk4(Child* file, const std::string& type, std::vector<uint8_t> head,
                                   OpenContext* ctx);
  Task<Result<void>> co_open_descriptor(OpenContext& ctx, std::string_view text);
  Task<Result<void>> co_open_extent(OpenContext& ctx, const ExtentLine& line, size_t index);
  Task<Result<void>> co_add_sparse(Child* file, const std::string& type, const SparseHeader& h);
  Task<Result<void>> co_read_descriptor_fields(uint64_t desc_offset);
  Task<Result<void>> co_open_backing(OpenContext& ctx);
  Result<void> add_extent(Extent e);
  Error open_error(int code) const;
  std::string dirname() const;

  // Reading (vmdk_io.cc).
  Task<Result<void>> co_read_unallocated(uint64_t offset, const IoVec& iov);
  Result<void> check_parent_cid() const;

  Child* file_ = nullptr;
  Child* backing_ = nullptr;
  std::vector<Extent> extents_;
  std::string create_type_;
  uint32_t cid_ = 0;
  uint32_t parent_cid_ = 0;
  std::string backing_file_;
};

}  // namespace strata::vmdk
