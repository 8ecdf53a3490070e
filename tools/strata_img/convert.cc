// strata-img convert [-c] [-p] [-q] [-n] [-W] [-m N] [-r RATE] [-f FMT] [-O FMT]
//                    [-B BACKING [-F FMT]] [-o OPTIONS] [-l SNAPSHOT] [-t CACHE] [-T CACHE]
//                    [-S SIZE] [-U] [--target-is-zero] [--target-image-opts] [--salvage]
//                    [--bitmaps [--skip-broken-bitmaps]] SRC DST
// qemu-img's checks in qemu-img's order, every one of them before the
// target is touched; the target is created with its lock taken first
// (strata_img/target.h), then filled by the copy loop (convert_copy.cc).
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>

#include "block/drivers/qcow2/qcow2.h"
#include "strata_img/bitmap.h"
#include "strata_img/common.h"
#include "strata_img/convert.h"
#include "strata_img/create_opts.h"
#include "strata_img/target.h"

namespace strata::img {

namespace {

struct ConvertArgs {
  CommonOptions common;  // the source: -f, -T (its cache), -U, --image-opts; -q
  std::string out_format;
  std::vector<std::string> sources;
  std::string out_name;
  std::string options;  // the -o lists, joined
  std::string backing, backing_format;
  bool has_backing = false, has_backing_format = false;
  std::string dst_cache = "unsafe";
  SnapshotParam snapshot;  // -l
  bool no_create = false;
  bool target_is_zero = false;
  bool target_image_opts = false;
  bool progress = false;
  bool copy_range = false;       // -C
  bool explicit_sparse = false;  // -S given
  bool bitmaps = false;          // --bitmaps (strata_img/bitmap.h)
  bool skip_broken = false;      // --skip-broken-bitmaps
  bool explicit_out_format = false;
  ConvertPlan plan;
};

// The target's creation options (qemu-img's order of checks), with the
// size of the source; null after printing the message when refused.
Result<std::optional<CreateOptionSet>> target_options(const ConvertArgs& a, uint64_t size) {
  auto set = CreateOptionSet::for_create(a.out_format);
  if (!set) {
    if (qemu_driver_name(a.out_format)) {
      return Error{ENOTSUP, "Format driver '" + a.out_format + "' does not support image creation"};
    }
    return Error{EINVAL, "Unknown file format '" + a.out_format + "'"};
  }
  if (!a.options.empty()) STRATA_TRY(set->parse(a.options));
  set->set("size", std::to_string(size));
  if (a.has_backing && a.out_format != "qcow2") {
    return Error{EINVAL, "Backing file not supported for file format '" + a.out_format + "'"};
  }
  if (a.has_backing) set->set("backing_file", a.backing);
  if (a.has_backing_format && a.out_format != "qcow2") {
    return Error{EINVAL,
                 "Backing file format not supported for file format '" + a.out_format + "'"};
  }
  if (a.has_backing_format) set->set("backing_fmt", a.backing_format);
  return set;
}

// The checks qemu-img makes between opening the sources and creating the
// target; prints the message and returns false when one fails.
bool target_checks(const ConvertArgs& a, const std::optional<CreateOptionSet>& set) {
  bool backing_param = set && set->has("backing_file");
  bool has_backing = backing_param || a.has_backing;
  if (a.target_is_zero && has_backing) {
    error_report("Cannot use --target-is-zero when the destination image has a backing file");
    return false;
  }
  if (backing_param && !set->has("backing_fmt")) {
    error_report("Use of backing file requires explicit backing format");
    return false;
  }
  if (a.plan.compress && set) {
    if (a.out_format != "qcow2") {
      error_report("Compression not supported for this file format");
      return false;
    }
    std::string prealloc = set->get("preallocation");
    if (!prealloc.empty() && prealloc != "off") {
      error_report("Compression and preallocation not supported at the same time");
      return false;
    }
  }
  return true;
}

// The target's creation options, checked without touching it: those the
// creation would refuse get qemu-img's "error while converting" prefix;
// the backing file the new target is to name must open (qemu-img finds a
// missing one only when it opens the target it has just created).
Task<Result<qcow2::CreateOptions>> co_check_new_target(Engine& engine, const ConvertArgs& a,
                                                       const CreateOptionSet& set) {
  auto o = parse_create_options(a.out_format, set);
  if (!o) {
    error_report(a.out_name + ": error while converting " + a.out_format + ": " +
                 o.error().message);
    co_return Error{EINVAL, ""};
  }
  if (!o->backing_file.empty()) {
    auto b = co_await co_backing_info(engine, o->backing_file, o->backing_format, a.out_name);
    if (!b) {
      error_report("Could not open '" + a.out_name +
                   "': Could not open backing file: " + b.error().message);
      co_return Error{EINVAL, ""};
    }
  }
  co_return *o;
}

Task<Result<std::unique_ptr<Drive>>> co_open_target(Engine& engine, const ConvertArgs& a) {
  OpenSpec dspec;
  dspec.filename = a.out_name;
  dspec.image_opts = a.target_image_opts;
  // -n without -O probes the target (docs/tools/strata-img.md).
  dspec.format = a.no_create && !a.explicit_out_format ? "" : a.out_format;
  dspec.writable = true;
  dspec.cache = a.dst_cache;
  dspec.unmap = a.plan.sparse_size != 0;
  co_return co_await co_open_image(engine, dspec);
}

// The cluster size compressed writes must cover (the target's).
Result<uint64_t> compress_cluster(Node& dst) {
  auto* q = dynamic_cast<qcow2::Qcow2Driver*>(&dst.driver());
  if (!q) return Error{ENOTSUP, "Compression not supported for this file format"};
  return q->header().cluster_size();
}

// The copy, with the target open; both images are closed by the callers.
Task<int> co_copy_into(Engine& engine, ConvertArgs& a, Node& src, Drive& dst, uint64_t size) {
  Node* dst_node = dst.edge()->node();
  if (a.bitmaps && !target_takes_bitmaps(*dst_node)) co_return 1;
  if (a.plan.compress) {
    auto cluster = compress_cluster(*dst_node);
    if (!cluster) {
      error_report(cluster.error().message);
      co_return 1;
    }
    a.plan.cluster_size = *cluster;
  }
  if (a.no_create && dst_node->size() < size) {
    error_report("output file is smaller than input file");
    co_return 1;
  }
  bool zeroed =
      (!a.no_create && !a.plan.target_has_backing && a.plan.sparse_size) || a.target_is_zero;
  Progress progress(a.progress && !a.common.quiet);
  progress.update(0);
  auto r = co_await co_copy_image(engine, a.plan, &src, dst.edge(), zeroed, &progress);
  if (r) progress.update(100);
  progress.finish();
  if (!r) {
    error_report(r.error().message);
    co_return 1;
  }
  if (a.bitmaps) {
    bool copied = co_await co_copy_convert_bitmaps(engine, src, *dst_node, a.skip_broken);
    if (!copied) co_return 1;
  }
  co_return 0;
}

// With the source open (and its snapshot loaded): the target checked,
// created (locks first), opened and filled; closed again on every path.
Task<int> co_convert_from(Engine& engine, ConvertArgs& a, Node& src) {
  uint64_t size = (src.size() + 511) / 512 * 512;
  std::optional<CreateOptionSet> set;
  if (!a.no_create) {
    auto opts = target_options(a, size);
    if (!opts) {
      error_report(opts.error().message);
      co_return 1;
    }
    set = std::move(*opts);
  }
  if (!target_checks(a, set)) co_return 1;
  a.plan.target_has_backing = (set && set->has("backing_file")) || a.has_backing;
  if (a.bitmaps && !check_convert_bitmaps(src, a.skip_broken)) co_return 1;
  if (a.bitmaps && set && a.out_format != "qcow2") {
    error_report("Format driver '" + a.out_format + "' does not support bitmaps");
    co_return 1;
  }
  if (set) {
    auto options = co_await co_check_new_target(engine, a, *set);
    if (!options) co_return 1;
    auto r = co_await co_create_new_image(engine, a.out_format, a.out_name, *options);
    if (!r) {
      error_report(a.out_name + ": error while converting " + a.out_format + ": " +
                   r.error().message);
      co_return 1;
    }
  }
  auto dst = co_await co_open_target(engine, a);
  if (!dst) {
    error_report(dst.error().message);
    co_return 1;
  }
  int rc = co_await co_copy_into(engine, a, src, **dst, size);
  co_await (*dst)->co_close();
  co_return rc;
}

Task<int> co_convert(Engine& engine, ConvertArgs a) {
  auto src = co_await co_open_image(engine, a.common.spec);
  if (!src) {
    error_report(src.error().message);
    co_return 1;
  }
  Node* src_node = (*src)->edge()->node();
  int rc = 1;
  if (a.snapshot.given()) {
    auto r = co_await co_load_snapshot(src_node, a.snapshot);
    if (!r) error_report("Failed to load snapshot: " + r.error().message);
    if (r) rc = co_await co_convert_from(engine, a, *src_node);
  } else {
    rc = co_await co_convert_from(engine, a, *src_node);
  }
  co_await (*src)->co_close();
  co_return rc;
}

// The checks qemu-img makes right after its options are read.
int check_arguments(ConvertArgs& a, const OptionParser& p) {
  if (a.skip_broken && !a.bitmaps) {
    error_report("Use of --skip-broken-bitmaps requires --bitmaps");
    return 1;
  }
  if (a.plan.compress && a.copy_range) {
    error_report("Cannot enable copy offloading when -c is used");
    return 1;
  }
  if (a.explicit_sparse && a.copy_range) {
    error_report("Cannot enable copy offloading when -S is used");
    return 1;
  }
  if (a.copy_range && a.plan.salvage) {
    error_report("Cannot use copy offloading in salvaging mode");
    return 1;
  }
  if (a.target_image_opts && !a.no_create) {
    error_report("--target-image-opts requires use of -n flag");
    return 1;
  }
  if (a.no_create && !a.options.empty()) {
    error_report("-o has no effect when skipping image creation");
    return 1;
  }
  if (a.target_is_zero && !a.no_create) {
    error_report("--target-is-zero requires use of -n flag");
    return 1;
  }
  return -1;
}

}  // namespace

int cmd_convert(Engine& engine, const Args& args) {
  enum { kTargetIsZero = kOptFirstOwn, kSalvage, kBitmaps, kSkipBroken, kTargetImageOpts };
  auto longopts = long_options(kLongImageOpts | kLongObject | kLongForceShare,
                               {{"target-is-zero", no_argument, nullptr, kTargetIsZero},
                                {"salvage", no_argument, nullptr, kSalvage},
                                {"bitmaps", no_argument, nullptr, kBitmaps},
                                {"skip-broken-bitmaps", no_argument, nullptr, kSkipBroken},
                                {"target-image-opts", no_argument, nullptr, kTargetImageOpts}});
  OptionParser p(args, "hf:O:B:F:Cco:l:S:pt:T:qnm:Wr:U", longopts.data());
  ConvertArgs a;
  for (int c; (c = p.next()) != -1;) {
    // -t is the target's cache here, -T the source's (the common -t).
    if (c == 't') {
      a.dst_cache = p.arg;
      continue;
    }
    OptionUse use = handle_common_option(c == 'T' ? 't' : c, p.arg, &a.common);
    if (use == OptionUse::kError) return 1;
    if (use == OptionUse::kHandled) continue;
    switch (c) {
      case 'O':
        a.out_format = p.arg;
        a.explicit_out_format = true;
        break;
      case 'B':
        a.backing = p.arg;
        a.has_backing = true;
        break;
      case 'F':
        a.backing_format = p.arg;
        a.has_backing_format = true;
        break;
      case 'c':
        a.plan.compress = true;
        break;
      case 'C':
        a.copy_range = true;
        break;
      case 'o':
        if (!valid_option_list(p.arg)) {
          error_report("Invalid option list: " + p.arg);
          return 1;
        }
        a.options += (a.options.empty() ? "" : ",") + p.arg;
        break;
      case 'l':
        if (!parse_snapshot_param(p.arg, &a.snapshot)) return 1;
        break;
      case 'S': {
        uint64_t v = 0;
        if (!cvtnum("buffer size for sparse output", p.arg, &v)) return 1;
        if (v % 512 || v > (16u << 20)) {
          error_report(
              "Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 "
              "up to 16777216. Select 0 to disable sparse detection (fully allocates output).");
          return 1;
        }
        a.plan.sparse_size = v;
        a.explicit_sparse = true;
        break;
      }
      case 'p':
        a.progress = true;
        break;
      case 'n':
        a.no_create = true;
        break;
      case 'm': {
        char* end = nullptr;
        long n = std::strtol(p.arg.c_str(), &end, 0);
        if (p.arg.empty() || *end || n < 1 || n > 16) {
          error_report(
              "Invalid number of coroutines. Allowed number of coroutines is between 1 and 16");
          return 1;
        }
        a.plan.parallel = int(n);
        break;
      }
      case 'W':
        a.plan.out_of_order = true;
        break;
      case 'r':
        if (!cvtnum("rate limit", p.arg, &a.plan.rate_limit)) return 1;
        break;
      case kTargetIsZero:
        a.target_is_zero = true;
        break;
      case kTargetImageOpts:
        a.target_image_opts = true;
        break;
      case kBitmaps:
        a.bitmaps = true;
        break;
      case kSkipBroken:
        a.skip_broken = true;
        break;
      case kSalvage:
        a.plan.salvage = true;
        break;
      case 'h':
        std::printf(
            "Usage: strata-img convert [-c] [-p] [-n] [-W] [-m n] [-f fmt] [-O fmt] [-B backing "
            "[-F fmt]] [-o options] src dst\n");
        return 0;
      default:
        return 1;
    }
  }
  if (a.out_format.empty() && !a.target_image_opts) a.out_format = "raw";
  a.plan.quiet = a.common.quiet;
  if (int rc = check_arguments(a, p); rc >= 0) return rc;
  if (!p.rest.empty()) a.out_name = p.rest.back();
  if (has_help_option(a.options)) {
    if (a.out_format.empty()) {
      error_report("Option help requires a format be specified");
      return 1;
    }
    auto set = CreateOptionSet::for_create(a.out_format);
    if (!set) {
      error_report("Unknown file format '" + a.out_format + "'");
      return 1;
    }
    std::printf("%s", set->help_text(!a.out_name.empty()).c_str());
    return 0;
  }
  if (p.rest.size() < 2) {
    error_report("Must specify image file name");
    return 1;
  }
  if (p.rest.size() > 2) {
    error_report("Converting more than one source image is not supported");
    return 1;
  }
  a.common.spec.filename = p.rest[0];
  return engine.run(co_convert(engine, a));
}

}  // namespace strata::img
