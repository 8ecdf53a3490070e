// strata-img check [-q] [-f FMT] [--output=human|json] [-r leaks|all] [-U] FILE
// Exit status as qemu-img: 0 clean, 1 check error, 2 corruptions, 3 leaks,
// 63 format without checks.
#include <cinttypes>
#include <cstdio>

#include "block/drivers/qcow2/check.h"
#include "strata_img/common.h"
#include "strata_img/json_out.h"

namespace strata::img {

namespace {

using ojson = nlohmann::ordered_json;

ojson check_json(const std::string& filename, const std::string& format,
                 const qcow2::CheckResult& r) {
  // In the order qemu-img prints them (its dictionary's order).
  ojson j;
  if (r.image_end_offset) j["image-end-offset"] = r.image_end_offset;
  if (r.compressed_clusters) j["compressed-clusters"] = r.compressed_clusters;
  if (r.total_clusters) j["total-clusters"] = r.total_clusters;
  if (r.corruptions) j["corruptions"] = r.corruptions;
  if (r.corruptions_fixed) j["corruptions-fixed"] = r.corruptions_fixed;
  j["check-errors"] = r.check_errors;
  if (r.leaks) j["leaks"] = r.leaks;
  if (r.leaks_fixed) j["leaks-fixed"] = r.leaks_fixed;
  if (r.allocated_clusters) j["allocated-clusters"] = r.allocated_clusters;
  j["filename"] = filename;
  j["format"] = format;
  if (r.fragmented_clusters) j["fragmented-clusters"] = r.fragmented_clusters;
  return j;
}

void print_human(const qcow2::CheckResult& r, bool quiet) {
  if (quiet) return;
  if (r.corruptions_fixed || r.leaks_fixed) {
    std::printf(
        "The following inconsistencies were found and repaired:\n\n"
        "    %" PRId64 " leaked clusters\n    %" PRId64
        " corruptions\n\n"
        "Double checking the fixed image now...\n",
        r.leaks_fixed, r.corruptions_fixed);
  }
  if (r.corruptions == 0 && r.leaks == 0 && r.check_errors == 0) {
    std::printf("No errors were found on the image.\n");
  } else {
    if (r.corruptions) {
      std::printf("\n%" PRId64
                  " errors were found on the image.\n"
                  "Data may be corrupted, or further writes to the image may corrupt it.\n",
                  r.corruptions);
    }
    if (r.leaks) {
      std::printf("\n%" PRId64
                  " leaked clusters were found on the image.\n"
                  "This means waste of disk space, but no harm to data.\n",
                  r.leaks);
    }
    if (r.check_errors) {
      std::printf("\n%" PRId64 " internal errors have occurred during the check.\n",
                  r.check_errors);
    }
  }
  if (r.total_clusters && r.allocated_clusters) {
    double alloc = double(r.allocated_clusters);
    std::printf("%" PRIu64 "/%" PRIu64
                " = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters\n",
                r.allocated_clusters, r.total_clusters, alloc * 100.0 / double(r.total_clusters),
                double(r.fragmented_clusters) * 100.0 / alloc,
                double(r.compressed_clusters) * 100.0 / alloc);
  }
  if (r.image_end_offset) std::printf("Image end offset: %" PRIu64 "\n", r.image_end_offset);
}

Task<int> co_check(Engine& engine, OpenSpec spec, bool json, int fix, bool quiet) {
  spec.no_backing = true;
  spec.writable = fix != 0;
  spec.check_mode = true;
  auto drive = co_await co_open_image(engine, spec);
  if (!drive) {
    error_report(drive.error().message);
    co_return 1;
  }
  Node* node = (*drive)->edge()->node();
  auto* q = dynamic_cast<qcow2::Qcow2Driver*>(&node->driver());
  if (!q) {
    error_report("This image format does not support checks");
    co_await (*drive)->co_close();
    co_return 63;
  }
  auto res = co_await qcow2::co_check(*q, fix);
  if (res && fix && res->corruptions == 0 && res->check_errors == 0) {
    if (auto r = co_await q->co_mark_repaired(); !r) res = Error{r.error()};
  }
  std::string format = node_format(node);  // the node is gone after close
  co_await (*drive)->co_close();
  if (!res) {
    error_report("Check failed: " + res.error().message);
    co_return 1;
  }
  for (const auto& m : res->messages) std::fprintf(stderr, "%s\n", m.c_str());
  if (json) {
    std::printf("%s\n", qemu_json_pretty(check_json(spec.filename, format, *res)).c_str());
  } else {
    print_human(*res, quiet);
  }
  if (res->check_errors) co_return 1;
  if (res->corruptions) co_return 2;
  if (res->leaks) co_return 3;
  co_return 0;
}

}  // namespace

int cmd_check(Engine& engine, const Args& args) {
  auto longopts =
      long_options(kLongFormat | kLongOutput | kLongImageOpts | kLongObject | kLongForceShare,
                   {{"repair", required_argument, nullptr, 'r'}});
  OptionParser p(args, "hf:r:T:qU", longopts.data());
  CommonOptions common;
  int fix = 0;
  for (int c; (c = p.next()) != -1;) {
    OptionUse use = handle_common_option(c, p.arg, &common);
    if (use == OptionUse::kError) return 1;
    if (use == OptionUse::kHandled) continue;
    switch (c) {
      case 'r':
        if (p.arg == "leaks") {
          fix = qcow2::kFixLeaks;
        } else if (p.arg == "all") {
          fix = qcow2::kFixLeaks | qcow2::kFixErrors;
        } else {
          return usage_error("Unknown option value for -r (expecting 'leaks' or 'all'): " + p.arg);
        }
        break;
      case 'T':
        common.spec.cache = p.arg;
        break;
      case 'h':
        std::printf("Usage: strata-img check [-f fmt] [--output=ofmt] [-r leaks|all] filename\n");
        return 0;
      default:
        return 1;
    }
  }
  if (p.rest.size() != 1) {
    return usage_error("Expecting one image file name");
  }
  common.spec.filename = p.rest[0];
  return engine.run(co_check(engine, common.spec, common.json, fix, common.quiet));
}

}  // namespace strata::img
