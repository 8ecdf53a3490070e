// raw: the image is the bytes of its file child, optionally a window
// [offset, offset + size) of it.
//
// A raw node whose format was probed (internal option x-probed, set by the
// tools) refuses writes that would make the image probe as another format
// next time, as QEMU's raw driver does for probed images: a first sector
// another format claims, or (Strata's prober also reads it) a last sector
// that is a valid VHD footer. Such nodes work in 512-byte units so those
// sectors are always written whole, and opening one read-write prints
// QEMU's warning about it to stderr.
#include <cstdio>
#include <cstring>

#include "block/core/graph.h"
#include "block/drivers/probe/probe.h"

namespace strata {

namespace {

class RawDriver final : public Driver {
 public:
  Task<Result<void>> co_open(OpenContext& ctx) override;
  Task<Result<void>> co_preadv(uint64_t offset, const IoVec& iov, uint32_t flags) override {
    return file_->co_preadv(offset_ + offset, iov, flags);
  }
  // The dispatcher keeps the range inside the window (size()).
  Task<Result<void>> co_splice_read(uint64_t offset, uint64_t bytes, Pipe& pipe) override {
    return file_->co_splice_read(offset_ + offset, bytes, pipe);
  }
  Task<Result<void>> co_pwritev(uint64_t offset, const IoVec& iov, uint32_t flags) override;
  Task<Result<void>> co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) override {
    return file_->co_pwrite_zeroes(offset_ + offset, bytes, flags);
  }
  Task<Result<void>> co_pdiscard(uint64_t offset, uint64_t bytes) override {
    return file_->co_pdiscard(offset_ + offset, bytes);
  }
  Task<Result<BlockStatus>> co_block_status(uint64_t offset, uint64_t bytes) override;
  Task<Result<void>> co_truncate(uint64_t size, bool exact, Preallocation prealloc) override;
  uint64_t size() const override;
  Limits limits() const override;
  Child* filtered_child() const override { return windowed() ? nullptr : file_; }
  Task<Result<void>> co_reopen_prepare(const NodeFlags&) override { return accept_any_reopen(); }

 private:
  bool windowed() const { return offset_ != 0 || has_size_; }
  Child* file_ = nullptr;
  uint64_t offset_ = 0;
  uint64_t size_ = 0;
  bool has_size_ = false;
  bool probed_ = false;
};

Limits RawDriver::limits() const {
  Limits l = file_->node()->limits();
  if (probed_) l.request_alignment = std::max<uint32_t>(l.request_alignment, 512);
  return l;
}

// QEMU's raw_co_pwritev for probed images: the first sector is checked on a
// copy, which is what gets written (the caller's buffer may change meanwhile).
Task<Result<void>> RawDriver::co_pwritev(uint64_t offset, const IoVec& iov, uint32_t flags) {
  if (!probed_ || iov.size() == 0)
    co_return co_await file_->co_pwritev(offset_ + offset, iov, flags);
  constexpr uint64_t kSector = probe::kVhdFooterBytes;
  std::vector<uint8_t> first;
  IoVec checked = iov;
  if (offset == 0) {
    first.resize(kSector);
    iov.copy_to(0, first.data(), kSector);
    if (probe::probe_head(first, "") != "raw") {
      co_return Error{EPERM,
                      "Operation not permitted: the write would change the format "
                      "of a probed raw image"};
    }
    checked = IoVec(first.data(), kSector);
    checked.append(iov.slice(kSector, iov.size() - kSector));
  }
  uint64_t size = this->size();
  if (size >= 2 * kSector && size % kSector == 0 && offset + iov.size() == size) {
    std::vector<uint8_t> last(kSector);
    checked.copy_to(checked.size() - kSector, last.data(), kSector);
    if (probe::is_vhd_footer(last)) {
      co_return Error{EPERM,
                      "Operation not permitted: the write would change the format "
                      "of a probed raw image"};
    }
  }
  co_return co_await file_->co_pwritev(offset_ + offset, checked, flags);
}

Task<Result<void>> RawDriver::co_open(OpenContext& ctx) {
  const auto& o = ctx.options();
  if (o.contains("offset") && o["offset"].get<int64_t>() < 0) {
    co_return Error{EINVAL, "offset cannot be negative"};
  }
  if (o.contains("size") && o["size"].get<int64_t>() < 0) {
    co_return Error{EINVAL, "size cannot be negative"};
  }
  offset_ = static_cast<uint64_t>(opt_int(o, "offset", 0));
  probed_ = opt_bool(o, "x-probed", false);
  has_size_ = o.contains("size");
  size_ = static_cast<uint64_t>(opt_int(o, "size", 0));
  uint32_t role = windowed() ? (kRoleData | kRolePrimary) : kRoleFilterChild;
  auto file = co_await ctx.co_open_child("file", role, true);
  if (!file) co_return std::move(file).error();
  file_ = *file;
  uint64_t file_size = file_->node()->size();
  if (offset_ > file_size || (has_size_ && offset_ + size_ > file_size)) {
    co_return Error{EINVAL, "The sum of offset (" + std::to_string(offset_) + ") and size (" +
                                std::to_string(has_size_ ? size_ : 0) +
                                ") has to be smaller or equal to the  actual size of the "
                                "containing file (" +
                                std::to_string(file_size) + ")"};
  }
  if (probed_ && !node().read_only()) {
    // QEMU's raw_open prints this, to stderr, for tools that probed.
    std::fprintf(stderr,
                 "WARNING: Image format was not specified for '%s' and probing guessed raw.\n"
                 "         Automatically detecting the format is dangerous for raw images, "
                 "write operations on block 0 will be restricted.\n"
                 "         Specify the 'raw' format explicitly to remove the restrictions.\n",
                 file_->node()->driver().filename().c_str());
  }
  uint32_t align = file_->node()->limits().request_alignment;
  if (offset_ % align) {
    co_return Error{EINVAL, "offset must be a multiple of " + std::to_string(align)};
  }
  co_return Result<void>{};
}

uint64_t RawDriver::size() const {
  if (has_size_) return size_;
  uint64_t file_size = file_->node()->size();
  return file_size > offset_ ? file_size - offset_ : 0;
}

Task<Result<BlockStatus>> RawDriver::co_block_status(uint64_t offset, uint64_t bytes) {
  BlockStatus st;
  st.flags = kStatusRecurse | kStatusOffsetValid;
  st.bytes = bytes;
  st.map_offset = offset_ + offset;
  st.map_node = file_->node();
  co_return st;
}

Task<Result<void>> RawDriver::co_truncate(uint64_t size, bool exact, Preallocation prealloc) {
  if (windowed()) co_return Error{ENOTSUP, "Cannot resize raw images with 'offset' or 'size'"};
  co_return co_await file_->co_truncate(size, exact, prealloc);
}

}  // namespace

void register_raw_driver(DriverRegistry& registry) {
  registry.add(DriverSpec{"raw",
                          DriverKind::kFormat,
                          {{"file", OptType::kChild, true},
                           {"offset", OptType::kInt},
                           {"size", OptType::kInt},
                           {"x-probed", OptType::kBool}},
                          [] { return std::make_unique<RawDriver>(); }});
}

}  // namespace strata
