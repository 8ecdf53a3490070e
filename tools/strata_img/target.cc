#include "strata_img/target.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <vector>

#include "block/core/filename.h"
#include "block/core/options.h"
#include "block/drivers/file_create.h"

namespace strata::img {

namespace {

const std::vector<std::string>& known_options(const std::string& format) {
  static const std::vector<std::string> qcow2 = {
      "cluster_size",     "compat",       "lazy_refcounts", "refcount_bits",
      "preallocation",    "backing_file", "backing_fmt",    "size",
      "compression_type", "extended_l2",  "data_file",      "data_file_raw"};
  static const std::vector<std::string> raw = {"size", "preallocation", "nocow",
                                               "extent_size_hint"};
  return format == "raw" ? raw : qcow2;
}

std::string option(const std::map<std::string, std::string>& o, const char* key) {
  auto it = o.find(key);
  return it == o.end() ? "" : it->second;
}

Result<bool> parse_bool_opt(const std::map<std::string, std::string>& o, const char* key,
                            bool def) {
  auto it = o.find(key);
  if (it == o.end()) return def;
  bool v;
  if (!parse_bool_word(it->second, &v)) {
    return Error{EINVAL, std::string("Parameter '") + key + "' expects 'on' or 'off'"};
  }
  return v;
}

Result<uint32_t> parse_number_opt(const std::string& text, const char* key) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(text.c_str(), &end, 0);
  if (text.empty() || *end || errno || text[0] == '-' || v > UINT32_MAX) {
    return Error{EINVAL, std::string("Parameter '") + key + "' expects a number"};
  }
  return uint32_t(v);
}

}  // namespace

Result<void> check_create_option_syntax(const std::string& format,
                                        const std::map<std::string, std::string>& opts) {
  const auto& known = known_options(format);
  for (const auto& [k, v] : opts) {
    if (std::find(known.begin(), known.end(), k) == known.end()) {
      return Error{EINVAL, "Invalid parameter '" + k + "'"};
    }
  }
  uint64_t size;
  std::string cs = option(opts, "cluster_size");
  if (!cs.empty() && !parse_img_size(cs, &size)) {
    return Error{EINVAL, "Parameter 'cluster_size' expects a size"};
  }
  STRATA_TRY(parse_bool_opt(opts, "lazy_refcounts", false));
  STRATA_TRY(parse_bool_opt(opts, "extended_l2", false));
  STRATA_TRY(parse_bool_opt(opts, "data_file_raw", false));
  STRATA_TRY(parse_bool_opt(opts, "nocow", false));  // accepted, as btrfs-only
  std::string hint = option(opts, "extent_size_hint");
  if (!hint.empty() && !parse_img_size(hint, &size)) {
    return Error{EINVAL, "Parameter 'extent_size_hint' expects a size"};
  }
  std::string bits = option(opts, "refcount_bits");
  if (!bits.empty()) STRATA_TRY(parse_number_opt(bits, "refcount_bits"));
  return {};
}

Result<qcow2::CreateOptions> parse_create_options(const std::string& format,
                                                  const std::map<std::string, std::string>& opts) {
  STRATA_TRY(check_create_option_syntax(format, opts));
  qcow2::CreateOptions o;
  auto get = [&](const char* k) { return option(opts, k); };
  if (!get("cluster_size").empty() && !parse_img_size(get("cluster_size"), &o.cluster_size)) {
    return Error{EINVAL, "Parameter 'cluster_size' expects a size"};
  }
  if (!get("compat").empty()) {
    STRATA_TRY_ASSIGN(o.version, qcow2::parse_compat(get("compat")));
  }
  STRATA_TRY_ASSIGN(o.lazy_refcounts, parse_bool_opt(opts, "lazy_refcounts", false));
  if (!get("refcount_bits").empty()) {
    STRATA_TRY_ASSIGN(o.refcount_bits, parse_number_opt(get("refcount_bits"), "refcount_bits"));
  }
  if (!get("preallocation").empty() &&
      !parse_preallocation(get("preallocation"), &o.preallocation)) {
    return Error{EINVAL,
                 "Parameter 'preallocation' does not accept value '" + get("preallocation") + "'"};
  }
  STRATA_TRY(qcow2::parse_feature_options(opts, &o));
  o.backing_file = get("backing_file");
  o.backing_format = get("backing_fmt");
  return o;
}

Task<Result<uint64_t>> co_backing_size(Engine& engine, std::string path, std::string format,
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
  uint64_t size = drive->size();
  co_await drive->co_close();
  co_return size;
}

Task<Result<void>> co_create_new_image(Engine& engine, const std::string& format,
                                       const std::string& filename,
                                       const qcow2::CreateOptions& options) {
  if (format == "qcow2") co_return co_await qcow2::co_create_image(engine, filename, options);
  if (format == "raw") {
    co_return co_await co_create_file(engine.loop(), filename, options.size, options.preallocation);
  }
  co_return Error{EINVAL, "Unknown file format '" + format + "'"};
}

}  // namespace strata::img
