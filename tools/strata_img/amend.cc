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
#include "strata_img/create_opts.h"

namespace strata::img {

namespace {

struct AmendArgs {
  CommonOptions common;
  std::string options;  // the -o lists, joined
  bool progress = false;
};

// The -o list checked against qcow2's amend options, as qemu-img does: an
// option only creation takes gets a hint saying so.
Result<std::map<std::string, std::string>> amend_values(const std::string& text) {
  auto set = CreateOptionSet::for_amend("qcow2");
  auto r = set->parse(text);
  if (r) return set->values();
  auto create = CreateOptionSet::for_create("qcow2");
  std::string msg = r.error().message;
  if (create->parse(text)) msg += "\nThis option is only supported for image creation";
  return Error{EINVAL, msg};
}

int print_amend_help(const std::string& format) {
  auto set = CreateOptionSet::for_amend(format);
  if (!set) {
    error_report(qemu_driver_name(format)
                     ? "Format driver '" + format + "' does not support option amendment"
                     : "Unknown file format '" + format + "'");
    return 1;
  }
  std::printf("%s", set->help_text(false).c_str());
  return 0;
}

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
      return Error{EINVAL,
                   "Cannot amend the backing file\nYou can use 'strata-img rebase' instead."};
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
  if (has_help_option(a.options)) {
    int rc = print_amend_help(node->driver_name());
    co_await drive->co_close();
    co_return rc ? Result<void>(Error{EINVAL, ""}) : Result<void>{};
  }
  if (!q) {
    r = Error{ENOTSUP,
              "Format driver '" + node->driver_name() + "' does not support option amendment"};
  }
  std::map<std::string, std::string> values;
  if (r) {
    auto checked = amend_values(a.options);
    if (checked) {
      values = std::move(*checked);
    } else {
      r = std::move(checked).error();
    }
  }
  Progress progress(a.progress && !a.common.quiet);
  qcow2::AmendOptions o;
  if (r) {
    progress.update(0);
    auto parsed = amend_options(values);
    if (parsed) {
      o = *parsed;
    } else {
      r = std::move(parsed).error();
    }
  }
  if (r) r = co_await q->co_amend(o);
  if (r && values.count("size")) {
    auto size = parse_size_option("size", values.at("size"));
    if (!size) {
      r = size.error();
    } else if (*size != drive->size()) {
      r = co_await drive->co_resize(*size);
    }
  }
  if (r) r = co_await drive->co_flush();
  if (r) progress.update(100);
  progress.finish();
  co_await drive->co_close();
  co_return r;
}

Task<int> co_amend(Engine& engine, AmendArgs a) {
  auto r = co_await co_amend_image(engine, a);
  if (!r) {
    if (!r.error().message.empty()) error_report(r.error().message);
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
        if (!valid_option_list(p.arg)) {
          error_report("Invalid option list: " + p.arg);
          return 1;
        }
        a.options += (a.options.empty() ? "" : ",") + p.arg;
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
  if (a.options.empty()) return usage_error("Must specify options (-o)");
  if (!a.common.spec.format.empty() && has_help_option(a.options)) {
    return print_amend_help(a.common.spec.format);
  }
  if (p.rest.size() != 1) {
    error_report("Expecting one image file name");
    return 1;
  }
  a.common.spec.filename = p.rest[0];
  return engine.run(co_amend(engine, a));
}

}  // namespace strata::img
