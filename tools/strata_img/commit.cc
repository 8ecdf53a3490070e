// strata-img commit [-q] [-f FMT] [-t CACHE] [-b BASE] [-d] [-p] [-r RATE]
//                   [--image-opts] [--object ...] FILE
// Copies what the layers above BASE (default: the backing file) allocate
// into BASE, growing BASE if it is smaller, then empties the top image
// unless -d (-b implies -d, as in qemu-img).
#include <climits>
#include <cstdio>
#include <cstdlib>

#include "block/drivers/qcow2/qcow2.h"
#include "strata_img/common.h"

namespace strata::img {

namespace {

constexpr uint64_t kChunk = 2 << 20;

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
    nlohmann::json layer = {
        {"driver", files[i].second},
        {"file", {{"driver", "file"}, {"filename", files[i].first}, {"discard", "unmap"}}}};
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

// Copies every range that the layers above `base` decide into `base_drive`.
Task<Result<void>> co_copy_down(Drive& top, Node* base, Drive& base_drive, Progress& progress,
                                RateLimit& rate) {
  Node* top_node = top.edge()->node();
  uint64_t size = top.size();
  std::vector<uint8_t> buf(kChunk);
  for (uint64_t off = 0; off < size;) {
    uint64_t n = std::min(kChunk, size - off);
    STRATA_CO_TRY_ASSIGN(ChainStatus st, co_await co_chain_status(top_node, off, n, base));
    n = st.bytes;
    if (st.present && st.zero) {
      // The clusters this frees are reusable once it is on disk, as in
      // qemu-img, where they are reused by the copies that follow.
      STRATA_CO_TRY(co_await base_drive.co_write_zeroes(off, n, true));
      STRATA_CO_TRY(co_await base_drive.co_flush());
    } else if (st.present) {
      co_await rate.co_account(n);
      STRATA_CO_TRY(co_await top.co_read(off, {buf.data(), n}));
      STRATA_CO_TRY(co_await base_drive.co_write(off, {buf.data(), n}));
    }
    off += n;
    progress.update(100.0 * double(off) / double(size));
  }
  co_return co_await base_drive.co_flush();
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
  if (r) r = co_await co_copy_down(**top, base, **base_drive, progress, rate);
  if (r && !a.drop) {
    auto* q = dynamic_cast<qcow2::Qcow2Driver*>(&(*top)->edge()->node()->driver());
    if (!q) {
      r = Error{ENOTSUP, "Format driver '" + node_format((*top)->edge()->node()) +
                             "' does not support emptying the image"};
    } else {
      r = co_await q->co_make_empty();
    }
  }
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
