// strata-img commit [-q] [-f FMT] [-t CACHE] [-b BASE] [-d] [-p] [-r RATE]
//                   [--image-opts] [--object ...] FILE
// Copies what the layers above BASE (default: the backing file) allocate
// into BASE, growing BASE if it is smaller, then empties the top image
// unless -d (-b implies -d, as in qemu-img). The copy is the commit job's
// copy engine (block/copy/).
#include <climits>
#include <cstdio>
#include <cstdlib>

#include "block/bitmap/hbitmap.h"
#include "block/copy/block_copier.h"
#include "block/copy/copy_engine.h"
#include "block/core/filename.h"
#include "block/core/graph.h"
#include "block/core/image_ops.h"
#include "strata_img/common.h"

namespace strata::img {

namespace {

// As the commit job: 1 MiB chunks, eight at once, in 64 KiB grains.
constexpr uint64_t kChunk = 1 << 20;
constexpr unsigned kWorkers = 8;
constexpr uint64_t kGranularity = 64 << 10;

struct CommitArgs {
  CommonOptions common;
  std::string base;
  bool drop = false;
  bool progress = false;
  uint64_t rate_limit = 0;  // -r, bytes per second
};

std::string canonical(const std::string& path) {
  char buf[PATH_MAX];
  return realpath(path.c_str(), buf) ? std::string(buf) : path;
}

// The files of the chain under `spec`: (filename, format) from the top.
Task<Result<std::vector<std::pair<std::string, std::string>>>> co_chain_files(Engine& engine,
                                                                              OpenSpec spec) {
  spec.writable = false;
  spec.force_share = true;
  STRATA_CO_TRY_ASSIGN(auto drive, co_await co_open_image(engine, spec));
  std::vector<std::pair<std::string, std::string>> out;
  for (Node* n : backing_chain(drive->edge()->node())) {
    out.emplace_back(node_filename(n), node_format(n));
  }
  co_await drive->co_close();
  co_return out;
}

// Blockdev options of the chain with the layer `writable_depth` opened
// read-write (the top is opened read-write by the Drive).
Task<Result<nlohmann::json>> co_chain_options(
    Engine& engine, OpenSpec spec, const std::vector<std::pair<std::string, std::string>>& files,
    size_t writable_depth) {
  nlohmann::json below;
  for (size_t i = writable_depth + 1; i-- > 1;) {
    // The layer's own name again: nbd://... opens over NBD, as it did.
    STRATA_CO_TRY_ASSIGN(nlohmann::json file,
                         filename_node_options(engine.graph().drivers(), files[i].first));
    // As QEMU's default for the file under a format: discards pass down.
    if (file.is_object() && !file.contains("discard")) file["discard"] = "unmap";
    nlohmann::json layer = {{"driver", files[i].second}, {"file", file}};
    layer["read-only"] = i != writable_depth;
    // As qemu-img commit (BDRV_O_UNMAP): zeroes may free the base's clusters.
    if (i == writable_depth) layer["discard"] = "unmap";
    if (!below.is_null()) layer["backing"] = below;
    below = layer;
  }
  spec.writable = true;
  STRATA_CO_TRY_ASSIGN(auto top, co_await co_image_options(engine, spec));
  top["backing"] = below;
  co_return top;
}

Node* node_at_depth(Node* top, size_t depth) {
  auto chain = backing_chain(top);
  return depth < chain.size() ? chain[depth] : nullptr;
}

// strata-img's side of the copy engine: no pauses, the first error stops
// the copy, progress goes to -p. Before a chunk starts, the base is
// flushed when ranges went by that were not copied as data (zeroes that
// may have freed the base's clusters), so that those clusters are free
// again for the data that follows, as in qemu-img.
class OfflineListener final : public CopyListener {
 public:
  OfflineListener(Progress& progress, uint64_t size, const BlockCopier& copier, Drive& base)
      : progress_(progress), size_(size), copier_(copier), base_(base) {}
  Task<bool> co_before_chunk() override {
    uint64_t not_copied = done_ - copier_.bytes_copied();
    if (not_copied != flushed_at_) {
      flushed_at_ = not_copied;
      // A failure here shows again in the final flush.
      (void)co_await base_.co_flush();
    }
    co_return true;
  }
  Task<ChunkErrorStep> co_on_error(Error, bool) override { co_return ChunkErrorStep::kStop; }
  void on_progress(uint64_t bytes) override {
    done_ += bytes;
    progress_.update(100.0 * double(done_) / double(size_));
  }

 private:
  Progress& progress_;
  uint64_t size_;
  const BlockCopier& copier_;
  Drive& base_;
  uint64_t done_ = 0;
  uint64_t flushed_at_ = 0;
};

// Copies every range that the layers above `base` allocate into
// `base_drive` with the copy engine the commit job uses (jobs/commit.h):
// many chunks at once, zeroes as zeroes (which may free the base's
// clusters, as qemu-img opens the base with discard=unmap), unallocated
// ranges skipped, -r's rate kept.
Task<Result<void>> co_copy_down(Engine& engine, Drive& top, Node* base, Drive& base_drive,
                                Progress& progress, RateLimit& rate) {
  uint64_t size = top.size();
  BlockCopierOptions options{
      .base = base, .skip_unallocated = true, .unmap = true, .max_chunk = kChunk};
  BlockCopier copier(*top.edge(), *base_drive.edge(), options,
                     [&rate](uint64_t bytes) -> Task<void> { co_await rate.co_account(bytes); });
  OfflineListener listener(progress, size, copier, base_drive);
  CopyEngine copy(engine.loop(), copier, listener,
                  CopyConfig{.max_chunk = kChunk, .max_workers = kWorkers});
  HBitmap work(size, __builtin_ctzll(kGranularity));
  work.set_all();
  STRATA_CO_TRY(co_await copy.co_run(work));
  co_return co_await base_drive.co_flush();
}

// Empties the top image once its data is in the base.
Task<Result<void>> co_make_empty(Node& top) {
  ImageOps* ops = top.driver().image_ops();
  if (!ops) {
    co_return Error{
        ENOTSUP, "Format driver '" + node_format(&top) + "' does not support emptying the image"};
  }
  co_return co_await ops->co_make_empty();
}

Task<Result<void>> co_commit_open(Engine& engine, const CommitArgs& a, size_t base_depth,
                                  const std::vector<std::pair<std::string, std::string>>& files) {
  STRATA_CO_TRY_ASSIGN(auto opts,
                       co_await co_chain_options(engine, a.common.spec, files, base_depth));
  DriveOptions dtop;
  dtop.writable = true;
  dtop.share_rw = true;  // the base below is written through its own Drive
  dtop.user = "strata-img";
  auto top = co_await Drive::co_open(engine, opts, dtop);
  if (!top) {
    co_return Error{top.error().code,
                    "Could not open '" + a.common.spec.filename + "': " + top.error().message};
  }
  Node* base = node_at_depth((*top)->edge()->node(), base_depth);
  DriveOptions dbase = dtop;
  auto base_drive = base ? Drive::attach(engine, base->name(), dbase)
                         : Result<std::unique_ptr<Drive>>(Error{ENOENT, "base not found"});
  Result<void> r;
  if (!base_drive) r = std::move(base_drive).error();
  if (r && (*base_drive)->size() < (*top)->size()) {
    r = co_await (*base_drive)->co_resize((*top)->size());
  }
  Progress progress(a.progress && !a.common.quiet);
  progress.update(0);
  RateLimit rate(engine.loop(), a.rate_limit);
  if (r) r = co_await co_copy_down(engine, **top, base, **base_drive, progress, rate);
  if (r && !a.drop) r = co_await co_make_empty(*(*top)->edge()->node());
  if (r) progress.update(100);
  progress.finish();
  if (base_drive) co_await (*base_drive)->co_close();
  co_await (*top)->co_close();
  co_return r;
}

Task<int> co_commit(Engine& engine, CommitArgs a) {
  auto files = co_await co_chain_files(engine, a.common.spec);
  if (!files) {
    error_report(files.error().message);
    co_return 1;
  }
  if (files->size() < 2) {
    error_report("Image does not have a backing file");
    co_return 1;
  }
  size_t base_depth = 1;
  if (!a.base.empty()) {
    base_depth = 0;
    std::string want = canonical(a.base);
    for (size_t i = 1; i < files->size() && !base_depth; i++) {
      if (canonical((*files)[i].first) == want) base_depth = i;
    }
    if (!base_depth) {
      error_report("Did not find '" + a.base + "' in the backing chain of '" +
                   a.common.spec.filename + "'");
      co_return 1;
    }
  }
  auto r = co_await co_commit_open(engine, a, base_depth, *files);
  if (!r) {
    error_report(r.error().message);
    co_return 1;
  }
  if (!a.common.quiet) std::printf("Image committed.\n");
  co_return 0;
}

}  // namespace

int cmd_commit(Engine& engine, const Args& args) {
  auto longopts = long_options(kLongObject | kLongImageOpts, {});
  OptionParser p(args, "f:ht:b:dpqr:", longopts.data());
  CommitArgs a;
  for (int c; (c = p.next()) != -1;) {
    OptionUse use = handle_common_option(c, p.arg, &a.common);
    if (use == OptionUse::kError) return 1;
    if (use == OptionUse::kHandled) continue;
    switch (c) {
      case 'b':
        a.base = p.arg;
        a.drop = true;  // the layers above the base would become invalid
        break;
      case 'd':
        a.drop = true;
        break;
      case 'p':
        a.progress = true;
        break;
      case 'r':
        if (!cvtnum("rate limit", p.arg, &a.rate_limit)) return 1;
        break;
      case 'h':
        std::printf("Usage: strata-img commit [-q] [-f fmt] [-t cache] [-b base] [-d] [-p] file\n");
        return 0;
      default:
        return 1;
    }
  }
  if (p.rest.size() != 1) {
    return usage_error("Expecting one image file name");
  }
  a.common.spec.filename = p.rest[0];
  return engine.run(co_commit(engine, a));
}

}  // namespace strata::img
