#include "block/drivers/qcow2/create.h"

#include <fcntl.h>

#include <cstring>

#include "base/fs.h"
#include "block/drivers/file_create.h"
#include "block/drivers/qcow2/format.h"
#include "block/drivers/qcow2/qcow2.h"
#include "block/drivers/qcow2/refcount.h"
#include "strata/drive.h"

namespace strata::qcow2 {

namespace {

uint32_t log2_exact(uint64_t v) {
  uint32_t bits = 0;
  while ((uint64_t(1) << bits) < v) bits++;
  return bits;
}

// Header, refcount table, one refcount block and (when everything fits in
// the block's coverage) the L1 table: the layout qemu-img writes.
struct Layout {
  Header header;
  uint64_t l1_clusters = 0;
  bool direct_l1 = false;
};

Layout plan(const CreateOptions& o) {
  Layout l;
  Header& h = l.header;
  h.version = o.version;
  h.cluster_bits = log2_exact(o.cluster_size);
  h.refcount_order = log2_exact(o.refcount_bits);
  h.header_length = o.version >= 3 ? kV3HeaderLength : kV2HeaderLength;
  h.refcount_table_offset = o.cluster_size;
  h.refcount_table_clusters = 1;
  if (o.lazy_refcounts) h.compatible_features |= kCompatLazyRefcounts;
  if (o.extended_l2) h.incompatible_features |= kIncompatExtendedL2;
  if (o.compression_type) h.incompatible_features |= kIncompatCompression;
  if (!o.data_file.empty()) h.incompatible_features |= kIncompatDataFile;
  if (o.data_file_raw) h.autoclear_features |= kAutoclearDataFileRaw;
  h.compression_type = o.compression_type;
  h.data_file = o.data_file;
  h.backing_file = o.backing_file;
  h.backing_format = o.backing_format;
  uint64_t l2_coverage = o.cluster_size * (o.cluster_size / (o.extended_l2 ? 16 : 8));
  uint64_t l1_size = div_round_up(o.size, l2_coverage);
  l.l1_clusters = div_round_up(l1_size * 8, o.cluster_size);
  uint64_t block_entries = (o.cluster_size * 8) >> h.refcount_order;
  l.direct_l1 = 3 + l.l1_clusters <= block_entries;
  if (l.direct_l1) {
    h.size = o.size;
    h.l1_size = uint32_t(l1_size);
    h.l1_table_offset = 3 * o.cluster_size;
  }
  return l;
}

Task<Result<void>> co_write_all(Loop& loop, int fd, const std::vector<uint8_t>& data,
                                uint64_t off) {
  IoVec iov(const_cast<uint8_t*>(data.data()), data.size());
  auto r = co_await fs::co_pwritev(loop, fd, iov, off);
  if (!r) co_return std::move(r).error();
  co_return Result<void>{};
}

// `header`: the serialized header, made before the file was touched.
Task<Result<void>> co_write_layout(Loop& loop, int fd, const Layout& l,
                                   std::vector<uint8_t> header) {
  const Header& h = l.header;
  uint64_t cs = h.cluster_size();
  header.resize(cs, 0);
  std::vector<uint8_t> table(cs, 0);
  store_be64(table.data(), 2 * cs);
  std::vector<uint8_t> block(cs, 0);
  uint64_t used = 3 + (l.direct_l1 ? l.l1_clusters : 0);
  for (uint64_t i = 0; i < used; i++) refblock_set(block.data(), h.refcount_order, i, 1);
  STRATA_CO_TRY(co_await co_write_all(loop, fd, header, 0));
  STRATA_CO_TRY(co_await co_write_all(loop, fd, table, cs));
  STRATA_CO_TRY(co_await co_write_all(loop, fd, block, 2 * cs));
  if (l.direct_l1 && h.l1_size) {
    std::vector<uint8_t> l1(uint64_t(h.l1_size) * 8, 0);
    STRATA_CO_TRY(co_await co_write_all(loop, fd, l1, h.l1_table_offset));
  }
  co_return Result<void>{};
}

// Large L1 tables (small clusters) and preallocation go through the driver,
// which grows the refcount structures as needed.
Task<Result<void>> co_grow_through_driver(Engine& engine, std::string path, uint64_t size,
                                          Preallocation prealloc) {
  nlohmann::json opts = {{"driver", "qcow2"},
                         {"backing", nullptr},
                         {"file", {{"driver", "file"}, {"filename", path}}}};
  DriveOptions dopts;  // explicit: GCC 12 mishandles defaulted coroutine arguments
  dopts.user = "qcow2 create";
  STRATA_CO_TRY_ASSIGN(auto drive, co_await Drive::co_open(engine, opts, dopts));
  auto r = co_await drive->co_resize(size);
  auto* qcow2 = dynamic_cast<Qcow2Driver*>(&drive->edge()->node()->driver());
  if (r && qcow2) r = co_await qcow2->co_preallocate(0, size, prealloc);
  if (r) r = co_await drive->co_flush();
  co_await drive->co_close();
  co_return r;
}

// The external data file: created when missing, then emptied and sized
// through a file node, so the image lock is held before anything changes
// (as QEMU's file protocol creation: truncated to 0, then to the size).
Task<Result<void>> co_create_data_file(Engine& engine, std::string path, uint64_t size) {
  STRATA_CO_TRY_ASSIGN(int fd, co_await fs::co_open(engine.loop(), path, O_RDWR | O_CREAT, 0644));
  (void)co_await fs::co_close(engine.loop(), fd);
  DriveOptions dopts;
  dopts.user = "qcow2 create";
  nlohmann::json opts = {{"driver", "file"}, {"filename", path}};
  STRATA_CO_TRY_ASSIGN(auto drive, co_await Drive::co_open(engine, opts, dopts));
  auto r = co_await drive->co_resize(0);
  if (r) r = co_await drive->co_resize(size);
  if (r) r = co_await drive->co_flush();
  co_await drive->co_close();
  co_return r;
}

}  // namespace

Result<uint32_t> parse_compat(const std::string& s) {
  if (s == "0.10" || s == "v2") return uint32_t{2};
  if (s == "1.1" || s == "v3") return uint32_t{3};
  return Error{EINVAL, "Invalid parameter '" + s + "'"};
}

namespace {

// Checks in the order of QEMU's qcow2_co_create.
Result<void> validate_layout(const CreateOptions& o) {
  constexpr const char* kV3 = " (use version=v3 or greater)";
  if (o.size % 512) return Error{EINVAL, "Image size must be a multiple of 512 bytes"};
  if (o.extended_l2 && o.version < 3) {
    return Error{EINVAL, std::string("Extended L2 entries are only supported with compatibility "
                                     "level 1.1 and above") +
                             kV3};
  }
  uint64_t cs = o.cluster_size;
  if (cs < 512 || cs > (2u << 20) || (cs & (cs - 1))) {
    return Error{EINVAL, "Cluster size must be a power of two between 512 and 2048k"};
  }
  if (o.extended_l2 && cs < (512u << kSubclusterBits)) {
    return Error{EINVAL,
                 "Extended L2 entries are only supported with cluster sizes of at least 16384 "
                 "bytes"};
  }
  if (o.preallocation != Preallocation::kOff && !o.backing_file.empty() && !o.extended_l2) {
    return Error{
        EINVAL,
        "Backing file and preallocation can only be used at the same time if extended_l2 is on"};
  }
  return {};
}

Result<void> validate_features(const CreateOptions& o) {
  constexpr const char* kV3 = " (use version=v3 or greater)";
  if (o.data_file_raw && o.data_file.empty()) {
    return Error{EINVAL, "data-file-raw requires data-file"};
  }
  if (o.data_file_raw && !o.backing_file.empty()) {
    return Error{EINVAL, "Backing file and data-file-raw cannot be used at the same time"};
  }
  if (!o.data_file.empty() && o.version < 3) {
    return Error{EINVAL,
                 std::string("External data files are only supported with compatibility level "
                             "1.1 and above") +
                     kV3};
  }
  if (o.compression_type != 0 && o.version < 3) {
    return Error{EINVAL,
                 std::string("Non-zlib compression type is only supported with compatibility "
                             "level 1.1 and above") +
                     kV3};
  }
  return {};
}

}  // namespace

Result<void> validate_create_options(const CreateOptions& o) {
  STRATA_TRY(validate_layout(o));
  if (!o.backing_format.empty() && o.backing_file.empty()) {
    return Error{EINVAL, "Backing format cannot be used without backing file"};
  }
  if (o.version < 3 && o.lazy_refcounts) {
    return Error{EINVAL,
                 "Lazy refcounts only supported with compatibility level 1.1 and above (use "
                 "version=v3 or greater)"};
  }
  uint32_t rb = o.refcount_bits;
  if (rb == 0 || rb > 64 || (rb & (rb - 1))) {
    return Error{EINVAL, "Refcount width must be a power of two and may not exceed 64 bits"};
  }
  if (o.version < 3 && rb != 16) {
    return Error{EINVAL,
                 "Different refcount widths than 16 bits require compatibility level 1.1 or above "
                 "(use version=v3 or greater)"};
  }
  STRATA_TRY(validate_features(o));
  if (o.backing_format.size() >= 16) return Error{EINVAL, "Backing format name too long"};
  if (o.backing_file.size() > 1023) return Error{EINVAL, "Backing file name too long"};
  if (o.data_file.size() > 1023) return Error{EINVAL, "Data file name too long"};
  if (o.preallocation != Preallocation::kOff && o.preallocation != Preallocation::kMetadata &&
      o.preallocation != Preallocation::kFalloc && o.preallocation != Preallocation::kFull) {
    return Error{EINVAL, "Unsupported preallocation mode"};
  }
  uint64_t cs = o.cluster_size;
  uint64_t l1 = div_round_up(o.size, cs * (cs / (o.extended_l2 ? 16 : 8)));
  if (l1 * 8 > kMaxL1Bytes)
    return Error{EINVAL, "The image size is too large (try using a larger cluster size)"};
  return {};
}

// The file: locked before it is emptied (block/drivers/file_create.h),
// unless the caller holds it through the graph.
Task<Result<int>> co_open_target(Loop& loop, const std::string& path, bool lock) {
  if (lock) co_return co_await co_open_for_create(loop, path);
  co_return co_await fs::co_open(loop, path, O_RDWR | O_CREAT, 0644);
}

Task<Result<void>> co_create_image(Engine& engine, std::string path, CreateOptions options) {
  // Everything that can be refused is refused before the file is touched.
  STRATA_CO_TRY(validate_create_options(options));
  // As QEMU: a raw data file needs at least metadata preallocation.
  if (options.data_file_raw && options.preallocation == Preallocation::kOff) {
    options.preallocation = Preallocation::kMetadata;
  }
  Loop& loop = engine.loop();
  Layout layout = plan(options);
  STRATA_CO_TRY_ASSIGN(auto header, serialize_header(layout.header));
  STRATA_CO_TRY_ASSIGN(int fd, co_await co_open_target(loop, path, options.lock_file));
  auto r = co_await fs::co_ftruncate(loop, fd, 0);
  if (r) apply_file_hints(fd, options.file_hints);
  if (r) r = co_await co_write_layout(loop, fd, layout, std::move(header));
  if (r) r = co_await fs::co_fdatasync(loop, fd);
  (void)co_await fs::co_close(loop, fd);
  if (!r) co_return r;
  if (!options.data_file.empty()) {
    STRATA_CO_TRY(co_await co_create_data_file(engine, options.data_file, options.size));
  }
  if (!layout.direct_l1 || options.preallocation != Preallocation::kOff) {
    STRATA_CO_TRY(
        co_await co_grow_through_driver(engine, path, options.size, options.preallocation));
  }
  co_return Result<void>{};
}

}  // namespace strata::qcow2
