// raw: the image is the bytes of its file child, optionally a window
// [offset, offset + size) of it.
#include "block/core/graph.h"

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
  Task<Result<void>> co_pwritev(uint64_t offset, const IoVec& iov, uint32_t flags) override {
    return file_->co_pwritev(offset_ + offset, iov, flags);
  }
  Task<Result<void>> co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) override {
    return file_->co_pwrite_zeroes(offset_ + offset, bytes, flags);
  }
  Task<Result<void>> co_pdiscard(uint64_t offset, uint64_t bytes) override {
    return file_->co_pdiscard(offset_ + offset, bytes);
  }
  Task<Result<BlockStatus>> co_block_status(uint64_t offset, uint64_t bytes) override;
  Task<Result<void>> co_truncate(uint64_t size, bool exact, Preallocation prealloc) override;
  uint64_t size() const override;
  Limits limits() const override { return file_->node()->limits(); }
  Child* filtered_child() const override { return windowed() ? nullptr : file_; }
  Task<Result<void>> co_reopen_prepare(const NodeFlags&) override { return accept_any_reopen(); }

 private:
  bool windowed() const { return offset_ != 0 || has_size_; }
  Child* file_ = nullptr;
  uint64_t offset_ = 0;
  uint64_t size_ = 0;
  bool has_size_ = false;
};

Task<Result<void>> RawDriver::co_open(OpenContext& ctx) {
  const auto& o = ctx.options();
  if (o.contains("offset") && o["offset"].get<int64_t>() < 0) {
    co_return Error{EINVAL, "offset cannot be negative"};
  }
  if (o.contains("size") && o["size"].get<int64_t>() < 0) {
    co_return Error{EINVAL, "size cannot be negative"};
  }
  offset_ = static_cast<uint64_t>(opt_int(o, "offset", 0));
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
  registry.add(DriverSpec{
      "raw",
      DriverKind::kFormat,
      {{"file", OptType::kChild, true}, {"offset", OptType::kInt}, {"size", OptType::kInt}},
      [] { return std::make_unique<RawDriver>(); }});
}

}  // namespace strata
