// strata-img bitmap (--merge SOURCE | --add | --remove | --clear | --enable |
//   --disable)... [-b SOURCE_FILE [-F SOURCE_FMT]] [-g GRANULARITY]
//   [--object OBJDEF] [--image-opts | -f FMT] FILENAME BITMAP
//
// qemu-img bitmap: the actions run in the order given, each as its QMP
// command would (block/bitmap/bitmap_ops.h), on the image opened read-write
// without its backing chain; the first failure stops with "Operation OP on
// bitmap NAME failed: ...". --add makes a persistent, enabled bitmap. The
// bitmaps are stored when the image closes (qcow2: bitmap_store.h).
#include <cstdio>
#include <string>
#include <vector>

#include "block/bitmap/bitmap_ops.h"
#include "block/bitmap/bitmap_store.h"
#include "block/core/graph.h"
#include "strata_img/bitmap.h"

namespace strata::img {

namespace {

enum class BitmapAction { kAdd, kRemove, kClear, kEnable, kDisable, kMerge };

struct Step {
  BitmapAction action;
  std::string source;  // --merge only
};

struct BitmapArgs {
  OpenSpec spec;
  std::vector<Step> steps;
  uint64_t granularity = 0;  // 0: the default
  std::string source_file, source_format;
  std::string filename, bitmap;
};

const char* action_name(BitmapAction a) {
  switch (a) {
    case BitmapAction::kAdd:
      return "add";
    case BitmapAction::kRemove:
      return "remove";
    case BitmapAction::kClear:
      return "clear";
    case BitmapAction::kEnable:
      return "enable";
    case BitmapAction::kDisable:
      return "disable";
    case BitmapAction::kMerge:
      return "merge";
  }
  return "";
}

template <typename T>
Result<void> status_of(const Result<T>& r) {
  if (!r) return r.error();
  return {};
}

Task<Result<void>> co_run_step(Graph& graph, const std::string& node, const BitmapArgs& a,
                               const Step& step, const std::string& source_node) {
  const std::string& bitmap = a.bitmap;
  switch (step.action) {
    case BitmapAction::kAdd: {
      BitmapAddOptions o;
      o.persistent = true;
      if (a.granularity) o.granularity = a.granularity;
      co_return status_of(co_await co_add_bitmap(graph, node, bitmap, o));
    }
    case BitmapAction::kRemove:
      co_return status_of(co_await co_remove_bitmap(graph, node, bitmap));
    case BitmapAction::kClear:
      co_return status_of(clear_bitmap(graph, node, bitmap));
    case BitmapAction::kEnable:
    case BitmapAction::kDisable:
      co_return status_of(enable_bitmap(graph, node, bitmap, step.action == BitmapAction::kEnable));
    case BitmapAction::kMerge:
      co_return status_of(merge_bitmaps(graph, node, bitmap, {{source_node, step.source}}));
  }
  co_return Result<void>{};
}

// Stores the bitmaps now, so a failure is reported; they are then left
// read-only so that closing does not store them twice.
Task<Result<void>> co_store_now(Node& node) {
  BitmapStore* store = bitmap_store_of(node);
  if (!store) co_return Result<void>{};
  STRATA_CO_TRY(co_await store->co_store_bitmaps());
  for (DirtyBitmap* b : node.bitmaps().all()) {
    if (b->persistent()) b->set_read_only(true);
  }
  co_return Result<void>{};
}

Task<int> co_bitmap(Engine& engine, BitmapArgs a) {
  OpenSpec spec = a.spec;
  spec.writable = true;
  spec.no_backing = true;
  auto drive = co_await co_open_image(engine, spec);
  if (!drive) {
    error_report(drive.error().message);
    co_return 1;
  }
  Node* node = (*drive)->edge()->node();
  std::unique_ptr<Drive> source;
  Node* source_node = node;
  if (!a.source_file.empty()) {
    OpenSpec s;
    s.filename = a.source_file;
    s.format = a.source_format;
    s.no_backing = true;
    auto opened = co_await co_open_image(engine, s);
    if (!opened) {
      error_report(opened.error().message);
      co_await (*drive)->co_close();
      co_return 1;
    }
    source = std::move(*opened);
    source_node = source->edge()->node();
  }
  int rc = 0;
  for (const Step& step : a.steps) {
    auto r = co_await co_run_step(engine.graph(), node->name(), a, step, source_node->name());
    if (!r) {
      error_report(std::string("Operation ") + action_name(step.action) + " on bitmap " + a.bitmap +
                   " failed: " + r.error().message);
      rc = 1;
      break;
    }
  }
  if (auto r = co_await co_store_now(*node); !r) {
    error_report("Error while closing the image: " + r.error().message);
    rc = 1;
  }
  if (source) co_await source->co_close();
  co_await (*drive)->co_close();
  co_return rc;
}

// Parses the command line; returns -1 when it is valid, else the exit code.
int parse_bitmap_args(const Args& args, BitmapArgs* a) {
  enum { kAdd = 256, kRemove, kClear, kEnable, kDisable, kMerge, kImageOpts, kObject };
  static const struct option longopts[] = {{"help", no_argument, nullptr, 'h'},
                                           {"object", required_argument, nullptr, kObject},
                                           {"image-opts", no_argument, nullptr, kImageOpts},
                                           {"add", no_argument, nullptr, kAdd},
                                           {"remove", no_argument, nullptr, kRemove},
                                           {"clear", no_argument, nullptr, kClear},
                                           {"enable", no_argument, nullptr, kEnable},
                                           {"disable", no_argument, nullptr, kDisable},
                                           {"merge", required_argument, nullptr, kMerge},
                                           {"granularity", required_argument, nullptr, 'g'},
                                           {"source-file", required_argument, nullptr, 'b'},
                                           {"source-format", required_argument, nullptr, 'F'},
                                           {nullptr, 0, nullptr, 0}};
  OptionParser p(args, "b:f:F:g:h", longopts);
  for (int c; (c = p.next()) != -1;) {
    switch (c) {
      case 'h':
        std::printf(
            "Usage: strata-img bitmap (--merge SOURCE | --add | --remove | --clear |\n"
            "    --enable | --disable)... [-b SOURCE_FILE [-F SOURCE_FMT]]\n"
            "    [-g GRANULARITY] [--object OBJDEF] [--image-opts | -f FMT]\n"
            "    FILENAME BITMAP\n");
        return 0;
      case 'b':
        a->source_file = p.arg;
        break;
      case 'F':
        a->source_format = p.arg;
        break;
      case 'g':
        if (!cvtnum("granularity", p.arg, &a->granularity)) return 1;
        break;
      case kAdd:
      case kRemove:
      case kClear:
      case kEnable:
      case kDisable:
        a->steps.push_back({BitmapAction(c - kAdd), ""});
        break;
      case kMerge:
        a->steps.push_back({BitmapAction::kMerge, p.arg});
        break;
      case 'f':
        a->spec.format = p.arg;
        break;
      case kImageOpts:
        a->spec.image_opts = true;
        break;
      case kObject:  // no objects are needed offline
        break;
      default:
        std::fprintf(stderr, "Try 'strata-img --help' for more information\n");
        return 1;
    }
  }
  auto has = [&](BitmapAction act) {
    for (const Step& s : a->steps) {
      if (s.action == act) return true;
    }
    return false;
  };
  const char* problem = nullptr;
  if (a->steps.empty()) {
    problem = "Need at least one of --add, --remove, --clear, --enable, --disable, or --merge";
  } else if (a->granularity && !has(BitmapAction::kAdd)) {
    problem = "granularity only supported with --add";
  } else if (!a->source_format.empty() && a->source_file.empty()) {
    problem = "-F only supported with -b";
  } else if (!a->source_file.empty() && !has(BitmapAction::kMerge)) {
    problem = "Merge bitmap source file only supported with --merge";
  } else if (p.rest.size() != 2) {
    problem = "Expecting filename and bitmap name";
  }
  if (problem) {
    error_report(problem);
    return 1;
  }
  a->spec.filename = p.rest[0];
  a->bitmap = p.rest[1];
  return -1;
}

}  // namespace

bool check_convert_bitmaps(Node& src, bool skip_broken) {
  BitmapStore* store = bitmap_store_of(src);
  if (!store || !store->supports_persistent()) {
    error_report("Source lacks bitmap support");
    return false;
  }
  std::vector<DirtyBitmap*> all = src.bitmaps().all();
  for (auto it = all.rbegin(); it != all.rend(); ++it) {  // newest first, as QEMU
    DirtyBitmap* b = *it;
    if (b->persistent() && b->inconsistent() && !skip_broken) {
      error_report("Cannot copy inconsistent bitmap '" + b->name() + "'");
      std::fprintf(stderr,
                   "Try --skip-broken-bitmaps, or use 'qemu-img bitmap --remove' to delete it\n");
      return false;
    }
  }
  return true;
}

bool target_takes_bitmaps(Node& dst) {
  BitmapStore* store = bitmap_store_of(dst);
  if (store && store->supports_persistent()) return true;
  error_report("Format driver '" + dst.driver_name() + "' does not support bitmaps");
  return false;
}

Task<bool> co_copy_convert_bitmaps(Engine& engine, Node& src, Node& dst, bool skip_broken) {
  Graph& graph = engine.graph();
  std::vector<DirtyBitmap*> all = src.bitmaps().all();
  for (auto it = all.rbegin(); it != all.rend(); ++it) {  // newest first, as QEMU
    DirtyBitmap* b = *it;
    if (!b->persistent()) continue;
    if (skip_broken && b->inconsistent()) {
      error_report("warning: Skipping inconsistent bitmap '" + b->name() + "'");
      continue;
    }
    BitmapAddOptions o;
    o.granularity = b->granularity();
    o.persistent = true;
    o.disabled = !b->enabled();
    auto added = co_await co_add_bitmap(graph, dst.name(), b->name(), o);
    if (!added) {
      error_report("Failed to create bitmap " + b->name() + ": " + added.error().message);
      co_return false;
    }
    auto merged = merge_bitmaps(graph, dst.name(), b->name(), {{src.name(), b->name()}});
    if (!merged) {
      error_report("Failed to populate bitmap " + b->name() + ": " + merged.error().message);
      (void)co_await co_remove_bitmap(graph, dst.name(), b->name());
      co_return false;
    }
  }
  if (auto r = co_await co_store_now(dst); !r) {
    error_report("Error while closing the image: " + r.error().message);
    co_return false;
  }
  co_return true;
}

int cmd_bitmap(Engine& engine, const Args& args) {
  BitmapArgs a;
  if (int rc = parse_bitmap_args(args, &a); rc >= 0) return rc;
  return engine.run(co_bitmap(engine, std::move(a)));
}

}  // namespace strata::img
