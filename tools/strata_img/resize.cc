// strata-img resize [-f FMT] [--shrink] [--preallocation=MODE] [-q] [-U] FILE [+|-]SIZE
#include <cstdio>

#include "strata_img/common.h"
#include "strata_img/create_opts.h"

namespace strata::img {

namespace {

Task<int> co_resize(Engine& engine, OpenSpec spec, std::string size_text, bool shrink, bool quiet,
                    Preallocation prealloc) {
  spec.writable = true;
  auto drive = co_await co_open_image(engine, spec);
  if (!drive) {
    error_report(drive.error().message);
    co_return 1;
  }
  uint64_t current = (*drive)->size();
  int sign = 0;
  if (!size_text.empty() && (size_text[0] == '+' || size_text[0] == '-')) {
    sign = size_text[0] == '+' ? 1 : -1;
    size_text = size_text.substr(1);
  }
  auto parsed = parse_size_option("size", size_text);
  if (!parsed) {
    error_report(parsed.error().message);
    co_await (*drive)->co_close();
    co_return 1;
  }
  uint64_t value = *parsed;
  uint64_t target = sign > 0 ? current + value : sign < 0 ? current - value : value;
  int rc = 0;
  if (sign < 0 && value > current) {
    error_report("New image size must be positive");
    rc = 1;
  } else if (prealloc != Preallocation::kOff && target < current) {
    error_report("Preallocation can only be used for growing images");
    rc = 1;
  } else if (target < current && !shrink) {
    error_report("Use the --shrink option to perform a shrink operation.");
    error_report(
        "warning: Shrinking an image will delete all data beyond the shrunken image's end. "
        "Before performing such an operation, make sure there is no important data there.");
    rc = 1;
  } else {
    auto r = co_await (*drive)->co_resize(target, prealloc);
    if (r) r = co_await (*drive)->co_flush();
    if (!r) {
      error_report(r.error().message);
      rc = 1;
    } else if (!quiet) {
      std::printf("Image resized.\n");
    }
  }
  co_await (*drive)->co_close();
  co_return rc;
}

}  // namespace

int cmd_resize(Engine& engine, const Args& args) {
  enum { kShrink = kOptFirstOwn, kPrealloc };
  auto longopts = long_options(kLongObject | kLongImageOpts,
                               {{"shrink", no_argument, nullptr, kShrink},
                                {"preallocation", required_argument, nullptr, kPrealloc}});
  // Negative sizes ("-1G") look like options: stop option parsing at the
  // first non-option argument.
  OptionParser p(args, "+f:hqU", longopts.data());
  CommonOptions common;
  bool shrink = false;
  Preallocation prealloc = Preallocation::kOff;
  for (int c; (c = p.next()) != -1;) {
    OptionUse use = handle_common_option(c, p.arg, &common);
    if (use == OptionUse::kError) return 1;
    if (use == OptionUse::kHandled) continue;
    switch (c) {
      case kShrink:
        shrink = true;
        break;
      case kPrealloc:
        if (!parse_preallocation(p.arg, &prealloc)) {
          error_report("Invalid preallocation mode '" + p.arg + "'");
          return 1;
        }
        break;
      case 'h':
        std::printf("Usage: strata-img resize [-f fmt] [--shrink] filename [+|-]size\n");
        return 0;
      default:
        return 1;
    }
  }
  if (p.rest.size() < 2) return usage_error("Not enough arguments");
  if (p.rest.size() > 2) return usage_error("Expecting image file name and size");
  common.spec.filename = p.rest[0];
  return engine.run(co_resize(engine, common.spec, p.rest[1], shrink, common.quiet, prealloc));
}

}  // namespace strata::img
