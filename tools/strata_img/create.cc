// strata-img create [-q] [-f FMT] [-b BACKING [-F BACKING_FMT]] [-u] [-o OPTIONS] FILE [SIZE]
// The steps and messages of qemu-img's img_create and bdrv_img_create: the
// options are type-checked, the backing file opened (for its size and to
// refuse a missing format), the "Formatting" line printed, and only then
// are the format's own checks made. Unlike qemu-img, every check is made
// before the file is touched, and the file is locked before it is emptied
// (strata_img/target.h, docs/tools/strata-img.md).
#include <cstdio>

#include "strata_img/common.h"
#include "strata_img/create_opts.h"
#include "strata_img/target.h"

namespace strata::img {

namespace {

struct CreateArgs {
  std::string format = "raw";
  std::string filename;
  std::string size_text;
  std::string options;  // the -o lists joined with ","
  std::string backing, backing_format;
  bool has_backing = false, has_backing_format = false;
  bool quiet = false;
  bool unsafe = false;
};

// Opens the backing file as qemu-img does before creating an overlay: its
// format is detected when none is given (and then refused), and its size
// is the new image's default.
Task<Result<uint64_t>> co_backing_size(Engine& engine, const CreateArgs& a,
                                       const std::string& backing, const std::string& format) {
  auto info = co_await co_backing_info(engine, backing, format, a.filename);
  if (!info) {
    co_return Error{info.error().code, info.error().message + "\nCould not open backing image."};
  }
  if (format.empty()) {
    co_return Error{EINVAL, "Backing file specified without backing format\nDetected format of " +
                                info->format + "."};
  }
  co_return info->size;
}

// bdrv_img_create's checks, up to the Formatting line; fills in the size.
Task<Result<void>> co_prepare(Engine& engine, const CreateArgs& a, CreateOptionSet& o,
                              uint64_t size) {
  if (a.has_backing && a.format != "qcow2") {
    co_return Error{EINVAL, "Backing file not supported for file format '" + a.format + "'"};
  }
  if (a.has_backing_format && a.format != "qcow2") {
    co_return Error{EINVAL, "Backing file format not supported for file format '" + a.format + "'"};
  }
  if (!a.options.empty()) STRATA_CO_TRY(o.parse(a.options));
  if (!o.has("size")) {
    if (size != UINT64_MAX) o.set("size", std::to_string(size));
  } else if (size != UINT64_MAX) {
    co_return Error{EINVAL, "The image size must be specified only once"};
  }
  if (a.has_backing) o.set("backing_file", a.backing);
  if (a.has_backing_format) o.set("backing_fmt", a.backing_format);
  std::string backing = o.get("backing_file");
  if (o.has("backing_file")) {
    if (backing == a.filename) {
      co_return Error{
          EINVAL, "Error: Trying to create an image with the same filename as the backing file"};
    }
    if (backing.empty()) co_return Error{EINVAL, "Expected backing file name, got empty string"};
  }
  std::string backing_format = o.get("backing_fmt");
  if (!backing.empty() && !a.unsafe) {
    STRATA_CO_TRY_ASSIGN(uint64_t bsize,
                         co_await co_backing_size(engine, a, backing, backing_format));
    if (!o.has("size")) o.set("size", std::to_string(bsize));
  } else if (!backing.empty() && backing_format.empty()) {
    co_return Error{EINVAL, "Backing file specified without backing format"};
  }
  if (!o.has("size")) co_return Error{EINVAL, "Image creation needs a size parameter"};
  co_return Result<void>{};
}

Task<int> co_create(Engine& engine, CreateArgs a) {
  auto set = CreateOptionSet::for_create(a.format);
  if (!set) {
    error_report(a.filename +
                 (qemu_driver_name(a.format)
                      ? ": Format driver '" + a.format + "' does not support image creation"
                      : ": Unknown file format '" + a.format + "'"));
    co_return 1;
  }
  uint64_t size = UINT64_MAX;
  if (!a.size_text.empty() && !cvtnum("image size", a.size_text, &size)) co_return 1;
  auto ready = co_await co_prepare(engine, a, *set, size);
  if (!ready) {
    // qemu-img ends the "Detected format" hint without a newline.
    const std::string& m = ready.error().message;
    bool hint = m.find("\nDetected format of ") != std::string::npos;
    std::fprintf(stderr, "strata-img: %s: %s%s", a.filename.c_str(), m.c_str(), hint ? "" : "\n");
    co_return 1;
  }
  if (!a.quiet) std::printf("%s\n", set->formatting_line(a.filename).c_str());
  std::fflush(stdout);
  // The format's own checks come after the Formatting line, as in
  // qemu-img, but still before the file is touched.
  auto options = parse_create_options(a.format, *set);
  Result<void> r;
  if (!options) r = std::move(options).error();
  if (r) r = co_await co_create_new_image(engine, a.format, a.filename, *options);
  if (!r) {
    error_report(a.filename + ": " + r.error().message);
    co_return 1;
  }
  co_return 0;
}

int print_help(const CreateArgs& a, const std::string& filename) {
  auto set = CreateOptionSet::for_create(a.format);
  if (!set) {
    error_report("Unknown file format '" + a.format + "'");
    return 1;
  }
  std::printf("%s", set->help_text(!filename.empty()).c_str());
  return 0;
}

}  // namespace

int cmd_create(Engine& engine, const Args& args) {
  auto longopts = long_options(kLongObject, {});
  OptionParser p(args, "F:b:f:ho:qu", longopts.data());
  // -f (the new image's format), -q and --object land in `common`.
  CommonOptions common;
  common.spec.format = "raw";
  CreateArgs a;
  for (int c; (c = p.next()) != -1;) {
    OptionUse use = handle_common_option(c, p.arg, &common);
    if (use == OptionUse::kError) return 1;
    if (use == OptionUse::kHandled) continue;
    switch (c) {
      case 'b':
        a.backing = p.arg;
        a.has_backing = true;
        break;
      case 'F':
        a.backing_format = p.arg;
        a.has_backing_format = true;
        break;
      case 'o':
        if (!valid_option_list(p.arg)) {
          error_report("Invalid option list: " + p.arg);
          return 1;
        }
        a.options += (a.options.empty() ? "" : ",") + p.arg;
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
  a.format = common.spec.format;
  a.quiet = common.quiet;
  if (has_help_option(a.options)) return print_help(a, p.rest.empty() ? "" : p.rest[0]);
  if (p.rest.empty()) return usage_error("Expecting image file name");
  a.filename = p.rest[0];
  if (p.rest.size() > 1) a.size_text = p.rest[1];
  if (p.rest.size() > 2) return usage_error("Unexpected argument: " + p.rest[2]);
  return engine.run(co_create(engine, a));
}

}  // namespace strata::img
