// strata-img create [-q] [-f FMT] [-b BACKING [-F BACKING_FMT]] [-u] [-o OPTIONS] FILE [SIZE]
#include <cstdio>

#include "strata_img/common.h"
#include "strata_img/target.h"

namespace strata::img {

namespace {

struct CreateArgs {
  std::string format = "raw";
  std::string filename;
  std::string size_text;
  bool quiet = false;
  bool unsafe = false;
  std::string backing;      // -b
  std::string backing_fmt;  // -F
  std::map<std::string, std::string> opts;
};

std::string describe(const CreateArgs& a, const qcow2::CreateOptions& o) {
  std::string s = "Formatting '" + a.filename + "', fmt=" + a.format;
  if (a.format == "qcow2") {
    s += " cluster_size=" + std::to_string(o.cluster_size) +
         " extended_l2=" + (o.extended_l2 ? "on" : "off");
    if (a.opts.count("preallocation")) s += " preallocation=" + a.opts.at("preallocation");
    s += std::string(" compression_type=") + (o.compression_type ? "zstd" : "zlib");
  }
  s += " size=" + std::to_string(o.size);
  if (a.format == "qcow2") {
    if (!o.backing_file.empty()) s += " backing_file=" + o.backing_file;
    if (!o.backing_format.empty()) s += " backing_fmt=" + o.backing_format;
    if (a.opts.count("compat")) s += " compat=" + a.opts.at("compat");
    if (!o.data_file.empty()) s += " data_file=" + o.data_file;
    if (a.opts.count("data_file_raw")) {
      s += std::string(" data_file_raw=") + (o.data_file_raw ? "on" : "off");
    }
    s += std::string(" lazy_refcounts=") + (o.lazy_refcounts ? "on" : "off");
    s += " refcount_bits=" + std::to_string(o.refcount_bits);
  } else if (a.opts.count("preallocation")) {
    s += " preallocation=" + a.opts.at("preallocation");
  }
  return s;
}

Task<int> co_create(Engine& engine, CreateArgs a) {
  if (!a.size_text.empty()) a.opts["size"] = a.size_text;
  auto parsed = parse_create_options(a.format, a.opts);
  if (parsed && !a.backing.empty() && a.format == "raw") {
    parsed = Error{ENOTSUP, "Backing file not supported for file format 'raw'"};
  }
  if (!parsed) {
    error_report(a.filename + ": " + parsed.error().message);
    co_return 1;
  }
  qcow2::CreateOptions o = *parsed;
  if (!a.backing.empty()) o.backing_file = a.backing;
  if (!a.backing_fmt.empty()) o.backing_format = a.backing_fmt;
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
  // As qemu-img: the backing file must open (unless -u), whether or not
  // it gives the size; nothing is created otherwise.
  if (!o.backing_file.empty() && !a.unsafe) {
    auto bs = co_await co_backing_size(engine, o.backing_file, o.backing_format, a.filename);
    if (!bs) {
      error_report(a.filename + ": " + bs.error().message + "\nCould not open backing image.");
      co_return 1;
    }
    if (!has_size) o.size = *bs;
    has_size = true;
  }
  if (!has_size) {
    error_report(a.filename + ": Image creation needs a size parameter");
    co_return 1;
  }
  if (!a.quiet) std::printf("%s\n", describe(a, o).c_str());
  std::fflush(stdout);
  auto r = co_await co_create_new_image(engine, a.format, a.filename, o);
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
        a.backing = p.arg;
        break;
      case 'F':
        a.backing_fmt = p.arg;
        break;
      case 'o':
        if (p.arg == "help" || p.arg == "?") {
          std::printf(
              "Supported options:\n  backing_file, backing_fmt, cluster_size, compat, "
              "compression_type, data_file, data_file_raw, extended_l2, lazy_refcounts, "
              "preallocation, refcount_bits, size\n");
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
