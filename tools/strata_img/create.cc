// strata-img create [-q] [-f FMT] [-b BACKING [-F BACKING_FMT]] [-u] [-o OPTIONS] FILE [SIZE]
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>

#include "base/fs.h"
#include "block/core/filename.h"
#include "block/drivers/qcow2/create.h"
#include "strata_img/common.h"

namespace strata::img {

namespace {

struct CreateArgs {
  std::string format = "raw";
  std::string filename;
  std::string size_text;
  bool quiet = false;
  bool unsafe = false;
  std::map<std::string, std::string> opts;
};

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

Task<Result<uint64_t>> co_backing_size(Engine& engine, std::string path, std::string fmt,
                                       std::string image) {
  OpenSpec spec;
  STRATA_CO_TRY_ASSIGN(spec.filename, backing_filename(image, path));
  spec.format = fmt;
  spec.force_share = true;
  STRATA_CO_TRY_ASSIGN(auto drive, co_await co_open_image(engine, spec));
  uint64_t size = drive->size();
  co_await drive->co_close();
  co_return size;
}

std::string describe(const CreateArgs& a, const qcow2::CreateOptions& o) {
  std::string s = "Formatting '" + a.filename + "', fmt=" + a.format;
  if (a.format == "qcow2") {
    s += " cluster_size=" + std::to_string(o.cluster_size) + " extended_l2=off";
    if (a.opts.count("preallocation")) s += " preallocation=" + a.opts.at("preallocation");
    s += " compression_type=zlib";
  }
  s += " size=" + std::to_string(o.size);
  if (a.format == "qcow2") {
    if (!o.backing_file.empty()) s += " backing_file=" + o.backing_file;
    if (!o.backing_format.empty()) s += " backing_fmt=" + o.backing_format;
    if (a.opts.count("compat")) s += " compat=" + a.opts.at("compat");
    s += std::string(" lazy_refcounts=") + (o.lazy_refcounts ? "on" : "off");
    s += " refcount_bits=" + std::to_string(o.refcount_bits);
  } else if (a.opts.count("preallocation")) {
    s += " preallocation=" + a.opts.at("preallocation");
  }
  return s;
}

Result<qcow2::CreateOptions> qcow2_options(const CreateArgs& a) {
  qcow2::CreateOptions o;
  static const char* known[] = {
      "cluster_size", "compat",      "lazy_refcounts", "refcount_bits",    "preallocation",
      "backing_file", "backing_fmt", "size",           "compression_type", "extended_l2"};
  for (const auto& [k, v] : a.opts) {
    bool ok = false;
    for (const char* n : known) ok |= k == n;
    if (!ok) return Error{EINVAL, "Invalid parameter '" + k + "'"};
  }
  auto get = [&](const char* k) -> std::string {
    auto it = a.opts.find(k);
    return it == a.opts.end() ? "" : it->second;
  };
  if (!get("cluster_size").empty() && !parse_img_size(get("cluster_size"), &o.cluster_size)) {
    return Error{EINVAL, "Parameter 'cluster_size' expects a size"};
  }
  if (!get("compat").empty()) {
    STRATA_TRY_ASSIGN(o.version, qcow2::parse_compat(get("compat")));
  }
  STRATA_TRY_ASSIGN(o.lazy_refcounts, parse_bool_opt(a.opts, "lazy_refcounts", false));
  if (!get("refcount_bits").empty()) o.refcount_bits = uint32_t(std::stoul(get("refcount_bits")));
  if (!get("preallocation").empty() &&
      !parse_preallocation(get("preallocation"), &o.preallocation)) {
    return Error{EINVAL,
                 "Parameter 'preallocation' does not accept value '" + get("preallocation") + "'"};
  }
  if (!get("compression_type").empty() && get("compression_type") != "zlib") {
    return Error{ENOTSUP, "Compression type '" + get("compression_type") + "' is not supported"};
  }
  STRATA_TRY_ASSIGN(bool ext_l2, parse_bool_opt(a.opts, "extended_l2", false));
  if (ext_l2) return Error{ENOTSUP, "Extended L2 entries are not supported"};
  o.backing_file = get("backing_file");
  o.backing_format = get("backing_fmt");
  return o;
}

Task<Result<void>> co_create_raw(Engine& engine, std::string path, uint64_t size,
                                 Preallocation prealloc) {
  STRATA_CO_TRY_ASSIGN(int fd,
                       co_await fs::co_open(engine.loop(), path, O_RDWR | O_CREAT | O_TRUNC));
  auto r = co_await fs::co_ftruncate(engine.loop(), fd, size);
  if (r && size && (prealloc == Preallocation::kFalloc || prealloc == Preallocation::kFull)) {
    r = co_await fs::co_allocate(engine.loop(), fd, 0, size);
  }
  (void)co_await fs::co_close(engine.loop(), fd);
  co_return r;
}

Task<int> co_create(Engine& engine, CreateArgs a) {
  if (!a.size_text.empty()) a.opts["size"] = a.size_text;
  auto parsed = qcow2_options(a);
  if (!parsed) {
    error_report(a.filename + ": " + parsed.error().message);
    co_return 1;
  }
  qcow2::CreateOptions o = *parsed;
  bool has_size = a.opts.count("size");
  if (has_size && !parse_img_size(a.opts["size"], &o.size)) {
    error_report("Invalid image size specified. You may use k, M, G, T, P or E suffixes for");
    error_report("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
    co_return 1;
  }
  if (!o.backing_file.empty() && o.backing_format.empty() && !a.unsafe) {
    error_report(a.filename + ": Backing file specified without backing format");
    co_return 1;
  }
  if (!has_size && !o.backing_file.empty()) {
    auto bs = co_await co_backing_size(engine, o.backing_file, o.backing_format, a.filename);
    if (!bs) {
      error_report(a.filename + ": " + bs.error().message);
      co_return 1;
    }
    o.size = *bs;
    has_size = true;
  }
  if (!has_size) {
    error_report(a.filename + ": Image creation needs a size parameter");
    co_return 1;
  }
  if (!a.quiet) std::printf("%s\n", describe(a, o).c_str());
  std::fflush(stdout);
  Result<void> r;
  if (a.format == "qcow2") {
    r = co_await qcow2::co_create_image(engine, a.filename, o);
  } else if (a.format == "raw") {
    r = co_await co_create_raw(engine, a.filename, o.size, o.preallocation);
  } else {
    r = Error{EINVAL, "Unknown file format '" + a.format + "'"};
  }
  if (!r) {
    error_report(a.filename + ": " + r.error().message);
    co_return 1;
  }
  co_return 0;
}

}  // namespace

int cmd_create(Engine& engine, const Args& args) {
  auto longopts = long_options(kLongObject, {});
  OptionParser p(args, "F:b:f:ho:qu", longopts.data());
  // -f (the new image's format), -q and --object land in `common`.
  CommonOptions common;
  CreateArgs a;
  for (int c; (c = p.next()) != -1;) {
    OptionUse use = handle_common_option(c, p.arg, &common);
    if (use == OptionUse::kError) return 1;
    if (use == OptionUse::kHandled) continue;
    switch (c) {
      case 'b':
        a.opts["backing_file"] = p.arg;
        break;
      case 'F':
        a.opts["backing_fmt"] = p.arg;
        break;
      case 'o':
        if (p.arg == "help" || p.arg == "?") {
          std::printf(
              "Supported options:\n  backing_file, backing_fmt, cluster_size, compat, "
              "lazy_refcounts, preallocation, refcount_bits, size\n");
          return 0;
        }
        parse_option_string(p.arg, &a.opts);
        break;
      case 'u':
        a.unsafe = true;
        break;
      case 'h':
        std::printf(
            "Usage: strata-img create [-f fmt] [-b backing [-F backing_fmt]] [-o options] file "
            "[size]\n");
        return 0;
      default:
        return 1;
    }
  }
  if (p.rest.empty()) {
    error_report("Expecting image file name");
    return 1;
  }
  a.format = common.spec.format;
  a.quiet = common.quiet;
  a.filename = p.rest[0];
  if (p.rest.size() > 1) a.size_text = p.rest[1];
  if (p.rest.size() > 2) {
    error_report("Unexpected argument: " + p.rest[2]);
    return 1;
  }
  return engine.run(co_create(engine, a));
}

}  // namespace strata::img
