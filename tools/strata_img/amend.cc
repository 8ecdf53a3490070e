// strata-img amend [-p] [-q] [-f FMT] [-t CACHE] [--force] [--image-opts]
//                  -o OPTIONS FILE
// Changes compat (0.10 <-> 1.1), lazy_refcounts, refcount_bits, data_file,
// data_file_raw (off only) and size of a qcow2 image in place, with
// qemu-img's messages for options that cannot change.
#include <cstdio>
#include <cstdlib>

#include "block/drivers/qcow2/create.h"
#include "block/drivers/qcow2/qcow2.h"
#include "strata_img/common.h"

namespace strata::img {

namespace {

struct AmendArgs {
  CommonOptions common;
  std::map<std::string, std::string> opts;
  bool has_opts = false;
  bool progress = false;
};

Result<qcow2::AmendOptions> amend_options(const std::map<std::string, std::string>& opts) {
  static const char* creation_only[] = {"cluster_size",     "preallocation", "extended_l2",
                                        "compression_type", "encrypt",       "encryption"};
  qcow2::AmendOptions o;
  for (const auto& [k, v] : opts) {
    if (k == "compat") {
      STRATA_TRY_ASSIGN(o.version, qcow2::parse_compat(v));
    } else if (k == "lazy_refcounts") {
      bool on;
      if (!parse_bool_word(v, &on)) {
        return Error{EINVAL, "Parameter 'lazy_refcounts' expects 'on' or 'off'"};
      }
      o.lazy_refcounts = on;
    } else if (k == "refcount_bits") {
      char* end = nullptr;
      unsigned long bits = std::strtoul(v.c_str(), &end, 10);
      if (*end || bits == 0 || bits > 64 || (bits & (bits - 1))) {
        return Error{EINVAL, "Refcount width must be a power of two and may not exceed 64 bits"};
      }
      o.refcount_bits = uint32_t(bits);
    } else if (k == "data_file") {
      o.data_file = v;
    } else if (k == "data_file_raw") {
      bool on;
      if (!parse_bool_word(v, &on)) {
        return Error{EINVAL, "Parameter 'data_file_raw' expects 'on' or 'off'"};
      }
      o.data_file_raw = on;
    } else if (k == "backing_file" || k == "backing_fmt") {
      return Error{EINVAL, "Cannot amend the backing file\nYou can use 'qemu-img rebase' instead."};
    } else if (k == "size") {
      continue;  // handled by a resize
    } else {
      bool creation = false;
      for (const char* c : creation_only) creation |= k == c;
      return Error{EINVAL,
                   "Invalid parameter '" + k + "'" +
                       (creation ? "\nThis option is only supported for image creation" : "")};
    }
  }
  return o;
}

Task<Result<void>> co_amend_image(Engine& engine, const AmendArgs& a) {
  OpenSpec spec = a.common.spec;
  spec.writable = true;
  STRATA_CO_TRY_ASSIGN(auto drive, co_await co_open_image(engine, spec));
  Node* node = drive->edge()->node();
  auto* q = dynamic_cast<qcow2::Qcow2Driver*>(&node->driver());
  Result<void> r;
  if (!q) {
    r = Error{ENOTSUP,
              "Format driver '" + node->driver_name() + "' does not support option amendment"};
  }
  Progress progress(a.progress && !a.common.quiet);
  progress.update(0);
  qcow2::AmendOptions o;
  if (r) {
    auto parsed = amend_options(a.opts);
    if (parsed) {
      o = *parsed;
    } else {
      r = std::move(parsed).error();
    }
  }
  if (r) r = co_await q->co_amend(o);
  if (r && a.opts.count("size")) {
    uint64_t size = 0;
    if (!parse_img_size(a.opts.at("size"), &size)) {
      r = Error{EINVAL, "Parameter 'size' expects a size"};
    } else if (size != drive->size()) {
      r = co_await drive->co_resize(size);
    }
  }
  if (r) r = co_await drive->co_flush();
  progress.finish();
  co_await drive->co_close();
  co_return r;
}

Task<int> co_amend(Engine& engine, AmendArgs a) {
  auto r = co_await co_amend_image(engine, a);
  if (!r) {
    error_report(r.error().message);
    co_return 1;
  }
  co_return 0;
}

}  // namespace

int cmd_amend(Engine& engine, const Args& args) {
  enum { kForce = kOptFirstOwn };
  auto longopts =
      long_options(kLongObject | kLongImageOpts, {{"force", no_argument, nullptr, kForce}});
  OptionParser p(args, "ho:f:t:pq", longopts.data());
  AmendArgs a;
  for (int c; (c = p.next()) != -1;) {
    OptionUse use = handle_common_option(c, p.arg, &a.common);
    if (use == OptionUse::kError) return 1;
    if (use == OptionUse::kHandled) continue;
    switch (c) {
      case 'o':
        if (p.arg == "help" || p.arg == "?") {
          std::printf(
              "Supported options:\n  compat, data_file, data_file_raw, lazy_refcounts, "
              "refcount_bits, size\n");
          return 0;
        }
        parse_option_string(p.arg, &a.opts);
        a.has_opts = true;
        break;
      case 'p':
        a.progress = true;
        break;
      case kForce:
        break;
      case 'h':
        std::printf("Usage: strata-img amend [-p] [-q] [-f fmt] -o options file\n");
        return 0;
      default:
        return 1;
    }
  }
  if (!a.has_opts) {
    error_report("Must specify options (-o)");
    return 1;
  }
  if (p.rest.size() != 1) {
    error_report("Expecting one image file name");
    return 1;
  }
  a.common.spec.filename = p.rest[0];
  return engine.run(co_amend(engine, a));
}

}  // namespace strata::img
