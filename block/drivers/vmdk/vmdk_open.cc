// Opening a VMDK image: the top file, descriptors, extents, the parent.
#include <cstring>

#include "block/drivers/bytes.h"
#include "block/drivers/read_only.h"
#include "block/drivers/vmdk/vmdk.h"

namespace strata::vmdk {

namespace {

// QEMU reads at most this much of a descriptor, and this much for its CIDs.
constexpr uint64_t kMaxDescriptorBytes = (1 << 20) - 1;
constexpr uint64_t kCidDescriptorBytes = 20 * kSector;
// Beyond QEMU: a compressed grain is read and inflated whole, twice its size.
constexpr uint64_t kMaxCompressedGrainBytes = 16 << 20;
// Beyond QEMU: the image must fit a byte offset the block layer addresses.
constexpr uint64_t kMaxSectors = uint64_t(1) << 52;

// QEMU's vmdk_read_desc: up to 1 MiB from `offset`, sized by the whole file.
Task<Result<std::vector<uint8_t>>> co_read_desc(Child* file, uint64_t offset) {
  uint64_t size = file->node()->size();
  if (size < 4) co_return Error{EINVAL, "File is too small, not a valid image"};
  std::vector<uint8_t> buf(std::min(size, kMaxDescriptorBytes), 0);
  auto r = co_await file->co_pread(offset, buf);
  if (!r) co_return Error{r.error().code, "Could not read from file: " + r.error().message};
  co_return buf;
}

std::string_view as_text(const std::vector<uint8_t>& b) {
  return descriptor_text({reinterpret_cast<const char*>(b.data()), b.size()});
}

}  // namespace

Error VmdkDriver::open_error(int code) const {
  return Error{
      code, "Could not open '" + file_->node()->driver().filename() + "': " + std::strerror(code)};
}

std::string VmdkDriver::dirname() const {
  std::string name = file_->node()->driver().filename();
  auto slash = name.rfind('/');
  return slash == std::string::npos ? "" : name.substr(0, slash + 1);
}

Task<Result<void>> VmdkDriver::co_open(OpenContext& ctx) {
  STRATA_CO_TRY(require_read_only(node(), "vmdk"));
  STRATA_CO_TRY_ASSIGN(file_, co_await ctx.co_open_child("file", kRoleImage, true));
  STRATA_CO_TRY(co_await co_open_top(ctx));
  if (extents_.empty()) co_return Error{EINVAL, "vmdk: the image has no extents"};
  co_return co_await co_open_backing(ctx);
}

Task<Result<void>> VmdkDriver::co_open_top(OpenContext& ctx) {
  STRATA_CO_TRY_ASSIGN(auto head, co_await co_read_desc(file_, 0));
  uint32_t magic = bytes::be32(head.data());
  uint64_t desc_offset = 0;
  if (magic == kMagicVmdk3 || magic == kMagicVmdk4) {
    STRATA_CO_TRY(co_await co_open_sparse(file_, "", std::move(head), &ctx));
    desc_offset = 0x200;
  } else {
    STRATA_CO_TRY(co_await co_open_descriptor(ctx, as_text(head)));
  }
  co_return co_await co_read_descriptor_fields(desc_offset);
}

// `ctx` is null for an extent of a descriptor: it may not be one itself.
Task<Result<void>> VmdkDriver::co_open_sparse(Child* file, const std::string& type,
                                              std::vector<uint8_t> head, OpenContext* ctx) {
  uint32_t magic = bytes::be32(head.data());
  if (magic == kMagicVmdk4) co_return co_await co_open_vmdk4(file, type, std::move(head), ctx);
  if (magic != kMagicVmdk3) co_return Error{EINVAL, "Image not in VMDK format"};
  STRATA_CO_TRY_ASSIGN(SparseHeader h, parse_vmdk3(head));
  co_return co_await co_add_sparse(file, type, h);
}

Task<Result<void>> VmdkDriver::co_open_vmdk4(Child* file, const std::string& type,
                                             std::vector<uint8_t> head, OpenContext* ctx) {
  Vmdk4Header h = read_vmdk4_header(head);
  if (h.capacity == 0 && h.desc_offset) {
    if (!ctx) {
      co_return Error{ENOTSUP, "vmdk: extent '" + file->node()->driver().filename() +
                                   "' is a descriptor (nested descriptors are not supported)"};
    }
    STRATA_CO_TRY_ASSIGN(auto desc, co_await co_read_desc(file, h.desc_offset << 9));
    co_return co_await co_open_descriptor(*ctx, as_text(desc));
  }
  if (create_type_.empty()) create_type_ = "monolithicSparse";
  uint64_t file_size = file->node()->size();
  if (h.gd_offset == kGdAtEnd) {
    if (file_size < kFooterBytes) co_return Error{EINVAL, "Failed to read footer"};
    std::vector<uint8_t> footer(kFooterBytes);
    auto r = co_await file->co_pread(file_size / kSector * kSector - kFooterBytes, footer);
    if (!r) co_return Error{r.error().code, "Failed to read footer: " + r.error().message};
    STRATA_CO_TRY_ASSIGN(h, read_stream_footer(footer));
  }
  uint64_t file_sectors = (file_size + kSector - 1) / kSector;
  STRATA_CO_TRY_ASSIGN(SparseHeader sh, check_vmdk4(h, file_sectors));
  if (sh.compressed) create_type_ = "streamOptimized";
  co_return co_await co_add_sparse(file, type, sh);
}

Task<Result<void>> VmdkDriver::co_add_sparse(Child* file, const std::string& type,
                                             const SparseHeader& h) {
  std::string name = file->node()->driver().filename();
  if (h.compressed && h.grain_sectors * kSector > kMaxCompressedGrainBytes) {
    co_return Error{ENOTSUP, "vmdk: compressed grains of " +
                                 std::to_string(h.grain_sectors * kSector) + " bytes in '" + name +
                                 "' are too large"};
  }
  uint64_t bytes = h.l1_entries * 4;
  if (h.l1_offset > file->node()->size() || bytes > file->node()->size() - h.l1_offset) {
    co_return Error{EINVAL, "vmdk: grain directory of '" + name + "' (" + std::to_string(bytes) +
                                " bytes at offset " + std::to_string(h.l1_offset) +
                                ") lies past the end of the file"};
  }
  std::vector<uint8_t> raw(bytes);
  auto r = co_await file->co_pread(h.l1_offset, raw);
  if (!r) {
    co_return Error{r.error().code,
                    "Could not read l1 table from extent '" + name + "': " + r.error().message};
  }
  std::vector<uint32_t> l1(h.l1_entries);
  for (size_t i = 0; i < l1.size(); i++) l1[i] = bytes::le32(raw.data() + 4 * i);
  co_return add_extent(Extent::sparse(file, type, h, std::move(l1)));
}

Result<void> VmdkDriver::add_extent(Extent e) {
  uint64_t start = extents_.empty() ? 0 : extents_.back().end_sector();
  if (e.sectors() > kMaxSectors - start) {
    return Error{EFBIG, "vmdk: the image is too large (more than " + std::to_string(kMaxSectors) +
                            " sectors)"};
  }
  e.set_end_sector(start + e.sectors());
  extents_.push_back(std::move(e));
  return {};
}

Task<Result<void>> VmdkDriver::co_open_descriptor(OpenContext& ctx, std::string_view text) {
  STRATA_CO_TRY_ASSIGN(Descriptor d, parse_descriptor(text));
  create_type_ = d.create_type;
  for (const auto& line : d.extents) {
    STRATA_CO_TRY(co_await co_open_extent(ctx, line, extents_.size()));
  }
  co_return Result<void>{};
}

Task<Result<void>> VmdkDriver::co_open_extent(OpenContext& ctx, const ExtentLine& line,
                                              size_t index) {
  if (line.type == "SESPARSE") {
    co_return Error{ENOTSUP, "vmdk: seSparse extents are not supported by Strata"};
  }
  std::string path = line.filename[0] == '/' ? line.filename : dirname() + line.filename;
  bool flat = line.type == "FLAT" || line.type == "VMFS";
  uint32_t role = flat ? kRoleData : (kRoleData | kRoleMetadata);
  nlohmann::json opts = {{"driver", "file"}, {"filename", path}};
  STRATA_CO_TRY_ASSIGN(Child * child, co_await ctx.co_open_child_with(
                                          "extents." + std::to_string(index), opts, role));
  if (flat)
    co_return add_extent(Extent::flat(child, line.type, line.sectors, line.flat_offset << 9));
  STRATA_CO_TRY_ASSIGN(auto head, co_await co_read_desc(child, 0));
  co_return co_await co_open_sparse(child, line.type, std::move(head), nullptr);
}

// The CIDs and the parent's name, from the descriptor at `desc_offset`.
Task<Result<void>> VmdkDriver::co_read_descriptor_fields(uint64_t desc_offset) {
  std::vector<uint8_t> buf(kCidDescriptorBytes, 0);
  auto r = co_await file_->co_pread(desc_offset, buf);
  if (!r) co_return std::move(r).error();
  buf.back() = 0;
  std::string_view text = as_text(buf);
  auto hint = parent_hint(text);
  if (!hint) co_return open_error(EINVAL);
  if (*hint) backing_file_ = **hint;
  auto cid = read_cid(text, false);
  auto parent = read_cid(text, true);
  if (!cid || !parent) co_return open_error(EINVAL);
  cid_ = *cid;
  parent_cid_ = *parent;
  co_return Result<void>{};
}

Task<Result<void>> VmdkDriver::co_open_backing(OpenContext& ctx) {
  if (ctx.options().contains("backing")) {
    STRATA_CO_TRY_ASSIGN(backing_, co_await ctx.co_open_child("backing", kRoleCow, false));
    co_return Result<void>{};
  }
  if (backing_file_.empty()) co_return Result<void>{};
  std::string path = backing_file_[0] == '/' ? backing_file_ : dirname() + backing_file_;
  nlohmann::json opts = {{"driver", "vmdk"}, {"file", {{"driver", "file"}, {"filename", path}}}};
  auto child = co_await ctx.co_open_child_with("backing", opts, kRoleCow);
  if (!child) {
    co_return Error{child.error().code, "Could not open backing file: " + child.error().message};
  }
  backing_ = *child;
  co_return Result<void>{};
}

uint64_t VmdkDriver::size() const {
  return extents_.empty() ? 0 : extents_.back().end_sector() * kSector;
}

bool VmdkDriver::extents_alike() const {
  for (const auto& e : extents_) {
    const Extent& first = extents_[0];
    if (e.is_flat() != first.is_flat() || e.compressed() != first.compressed() ||
        (!e.is_flat() && e.grain_bytes() != first.grain_bytes())) {
      return false;
    }
  }
  return true;
}

uint64_t VmdkDriver::cluster_size() const {
  if (extents_.empty() || extents_[0].is_flat() || !extents_alike()) return 0;
  return extents_[0].grain_bytes();
}

nlohmann::json VmdkDriver::format_specific() const {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& e : extents_) {
    nlohmann::json x = {{"filename", e.file()->node()->driver().filename()},
                        {"format", e.type()},
                        {"virtual-size", e.sectors() * kSector}};
    if (!e.is_flat()) x["cluster-size"] = e.grain_bytes();
    if (e.compressed()) x["compressed"] = true;
    list.push_back(x);
  }
  return {{"type", "vmdk"},
          {"data",
           {{"cid", cid_},
            {"parent-cid", parent_cid_},
            {"create-type", create_type_},
            {"extents", list}}}};
}

}  // namespace strata::vmdk

namespace strata {

void register_vmdk_driver(DriverRegistry& registry) {
  registry.add(DriverSpec{"vmdk",
                          DriverKind::kFormat,
                          {{"file", OptType::kChild, true}, {"backing", OptType::kChildOrNull}},
                          [] { return std::make_unique<vmdk::VmdkDriver>(); }});
}

}  // namespace strata
