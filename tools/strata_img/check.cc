// strata-img check [-q] [-f FMT] [--output=human|json] [-r leaks|all] [-U] FILE
// Exit status as qemu-img: 0 clean, 1 check error, 2 corruptions, 3 leaks,
// 63 format without checks.
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "block/drivers/qcow2/check.h"
#include "block/drivers/vdi/check.h"
#include "block/drivers/vmdk/check.h"
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

// The formats Strata only reads.
bool is_read_only_format(const std::string& driver) {
  return driver == "vmdk" || driver == "vpc" || driver == "vdi";
}

// vmdk and vdi: QEMU's checks only count corruptions and cannot repair
// (-r then says the format does not support checks, as qemu-img).
bool counts_corruptions_only(Node* node) {
  return dynamic_cast<vmdk::VmdkDriver*>(&node->driver()) ||
         dynamic_cast<vdi::VdiDriver*>(&node->driver());
}

Task<FormatCheck> co_check_simple(Node* node) {
  if (auto* v = dynamic_cast<vdi::VdiDriver*>(&node->driver())) co_return vdi::check(*v);
  co_return co_await vmdk::co_check(*dynamic_cast<vmdk::VmdkDriver*>(&node->driver()));
}

int report_simple(const std::string& filename, const std::string& format, const FormatCheck& r,
                  bool json, bool quiet) {
  for (const auto& m : r.messages) std::fprintf(stderr, "%s\n", m.c_str());
  if (r.error) {
    error_report(std::string("Check failed: ") + std::strerror(r.error));
    return 1;
  }
  qcow2::CheckResult res;
  res.corruptions = r.corruptions;
  if (json) {
    std::printf("%s\n", qemu_json_pretty(check_json(filename, format, res)).c_str());
  } else {
    print_human(res, quiet);
  }
  return res.corruptions ? 2 : 0;
}

// Runs the qcow2 check on an open image (its backing chain opened too, as
// qemu-img opens it: a missing backing file fails the open).
Task<Result<qcow2::CheckResult>> co_run_check(Node* node, int fix) {
  auto* q = dynamic_cast<qcow2::Qcow2Driver*>(&node->driver());
  if (!q) co_return Error{ENOTSUP, "This image format does not support checks"};
  co_return co_await qcow2::co_check(*q, fix);
}

// qemu-img's exit status: 1 when the check did not complete, then 2 for
// corruptions, 3 for leaks.
int report(const qcow2::CheckResult& r, const std::string& filename, const std::string& format,
           bool json, bool quiet) {
  for (const auto& m : r.messages) {
    std::fprintf(stderr, "%s%s\n", m.error_report ? "strata-img: " : "", m.text.c_str());
  }
  if (r.aborted) {
    error_report(std::string("Check failed: ") + std::strerror(r.aborted));
    return 1;
  }
  if (json) {
    std::printf("%s\n", qemu_json_pretty(check_json(filename, format, r)).c_str());
  } else {
    print_human(r, quiet);
  }
  if (r.check_errors) {
    error_report("Check failed");
    return 1;
  }
  if (r.corruptions) return 2;
  return r.leaks ? 3 : 0;
}

Task<int> co_check(Engine& engine, OpenSpec spec, bool json, int fix, bool quiet) {
  spec.check_mode = true;
  // Read-only drivers cannot repair: opened read-only, they answer as
  // qemu-img does for formats whose check cannot repair.
  auto opts = co_await co_image_options(engine, spec);
  bool read_only_format = opts && is_read_only_format(opts->value("driver", ""));
  spec.writable = fix != 0 && !read_only_format;
  auto drive = co_await co_open_image(engine, spec);
  if (drive && fix && read_only_format) {
    co_await (*drive)->co_close();
    error_report("This image format does not support checks");
    co_return 63;
  }
  if (!drive) {
    error_report(drive.error().message);
    co_return 1;
  }
  Node* node = (*drive)->edge()->node();
  std::string format = node_format(node);  // the node is gone after close
  if (!fix && counts_corruptions_only(node)) {
    auto r = co_await co_check_simple(node);
    co_await (*drive)->co_close();
    co_return report_simple(spec.filename, format, r, json, quiet);
  }
  auto res = co_await co_run_check(node, fix);
  co_await (*drive)->co_close();
  if (!res) {
    error_report(res.error().message);
    co_return res.error().code == ENOTSUP ? 63 : 1;
  }
  co_return report(*res, spec.filename, format, json, quiet);
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
