#include "strata_img/target.h"

#include <cerrno>

#include "block/core/filename.h"
#include "block/core/options.h"
#include "block/drivers/file_create.h"

namespace strata::img {

namespace {

Result<Preallocation> preallocation_of(const std::string& format, const CreateOptionSet& set) {
  Preallocation p = Preallocation::kOff;
  std::string v = set.get("preallocation");
  if (!v.empty() && !parse_preallocation(v, &p)) {
    if (format == "raw") return Error{EINVAL, "invalid parameter value: " + v};
    return Error{EINVAL, "Parameter 'preallocation' does not accept value '" + v + "'"};
  }
  return p;
}

FileHints file_hints(const CreateOptionSet& set) {
  FileHints h;
  h.nocow = set.flag("nocow", false);
  h.extent_size_hint = set.number("extent_size_hint", h.extent_size_hint);
  h.extent_size_hint_given = set.has("extent_size_hint");
  return h;
}

// qcow2's own options, in the order qcow2_co_create reads them.
Result<void> parse_qcow2_options(const CreateOptionSet& set, qcow2::CreateOptions* o) {
  o->cluster_size = set.number("cluster_size", o->cluster_size);
  if (set.has("compat")) {
    auto v = qcow2::parse_compat(set.get("compat"));
    if (!v) {
      return Error{EINVAL, "Parameter 'version' does not accept value '" + set.get("compat") + "'"};
    }
    o->version = *v;
  }
  o->lazy_refcounts = set.flag("lazy_refcounts", false);
  o->refcount_bits = uint32_t(std::min<uint64_t>(set.number("refcount_bits", 16), UINT32_MAX));
  o->backing_file = set.get("backing_file");
  o->backing_format = set.get("backing_fmt");
  return qcow2::parse_feature_options(set.values(), o);
}

}  // namespace

Result<qcow2::CreateOptions> parse_create_options(const std::string& format,
                                                  const CreateOptionSet& set) {
  if (format != "qcow2" && format != "raw") {
    return Error{EINVAL, "Unknown file format '" + format + "'"};
  }
  qcow2::CreateOptions o;
  o.size = (set.number("size", 0) + 511) / 512 * 512;
  o.file_hints = file_hints(set);
  if (o.file_hints.extent_size_hint > UINT32_MAX) {
    return Error{EINVAL, "Extent size hint is too large"};
  }
  if (format == "qcow2") STRATA_TRY(parse_qcow2_options(set, &o));
  STRATA_TRY_ASSIGN(o.preallocation, preallocation_of(format, set));
  if (format == "raw" && o.preallocation == Preallocation::kMetadata) {
    return Error{ENOTSUP, "Unsupported preallocation mode: metadata"};
  }
  if (format == "qcow2") STRATA_TRY(qcow2::validate_create_options(o));
  return o;
}

Task<Result<BackingInfo>> co_backing_info(Engine& engine, std::string path, std::string format,
                                          const std::string& image) {
  // As QEMU: relative to the image's directory unless absolute or a
  // protocol name (nbd://..., json:{...}).
  OpenSpec spec;
  STRATA_CO_TRY_ASSIGN(spec.filename, backing_filename(image, path));
  spec.format = format;
  spec.force_share = true;
  STRATA_CO_TRY_ASSIGN(auto opts, co_await co_image_options(engine, spec));
  DriveOptions d;
  d.writable = false;
  d.share_rw = true;
  d.user = "strata-img";
  STRATA_CO_TRY_ASSIGN(auto drive, co_await Drive::co_open(engine, opts, d));
  BackingInfo info;
  info.size = drive->size();
  info.format = node_format(drive->edge()->node());
  co_await drive->co_close();
  co_return info;
}

Task<Result<void>> co_create_new_image(Engine& engine, const std::string& format,
                                       const std::string& filename,
                                       const qcow2::CreateOptions& options) {
  if (format == "qcow2") co_return co_await qcow2::co_create_image(engine, filename, options);
  if (format == "raw") {
    co_return co_await co_create_file(engine.loop(), filename, options.size, options.preallocation,
                                      options.file_hints);
  }
  co_return Error{EINVAL, "Unknown file format '" + format + "'"};
}

}  // namespace strata::img
