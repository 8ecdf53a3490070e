// strata-img rebase [-q] [-f FMT] [-t CACHE] [-T SRC_CACHE] [-p] [-u] [-U]
//                   -b BACKING [-F BACKING_FMT] FILE
// Safe mode: every range the image does not allocate itself is compared
// between the old backing chain and the new backing file, and the clusters
// that differ get the old content written into the image, so its guest
// view does not change; then the header names the new backing file.
// -u only rewrites the header. -b "" removes the backing file (safe mode
// then copies all of the old backing content in).
#include <cstdio>
#include <cstring>

#include "block/core/filename.h"
#include "block/core/image_ops.h"
#include "strata_img/common.h"

namespace strata::img {

namespace {

constexpr uint64_t kChunk = 1 << 20;

struct RebaseArgs {
  CommonOptions common;
  std::string backing;
  bool has_backing = false;
  std::string backing_format;
  bool unsafe = false;
  bool progress = false;
};

std::string relative_to_image(const std::string& path, const std::string& image) {
  auto full = backing_filename(image, path);
  return full ? *full : path;
}

// Reads [off, off + len) of `drive`, zeroes past its end.
Task<Result<void>> co_read_padded(Drive* drive, uint64_t off, uint8_t* buf, uint64_t len) {
  uint64_t have = drive && off < drive->size() ? std::min(len, drive->size() - off) : 0;
  if (have) STRATA_CO_TRY(co_await drive->co_read(off, {buf, have}));
  std::memset(buf + have, 0, len - have);
  co_return Result<void>{};
}

// Writes into `top` the clusters of [off, off + len) where the old view
// (`old_data`, what top shows now) differs from the new backing.
Task<Result<void>> co_keep_old_view(Drive& top, Drive* fresh, uint64_t off, uint64_t len,
                                    uint64_t grain, std::vector<uint8_t>& old_data,
                                    std::vector<uint8_t>& new_data) {
  STRATA_CO_TRY(co_await top.co_read(off, {old_data.data(), len}));
  STRATA_CO_TRY(co_await co_read_padded(fresh, off, new_data.data(), len));
  for (uint64_t pos = 0; pos < len;) {
    uint64_t n = std::min(grain - (off + pos) % grain, len - pos);
    uint64_t run = 0;
    while (pos + run < len) {
      uint64_t m = std::min(grain - (off + pos + run) % grain, len - pos - run);
      if (std::memcmp(&old_data[pos + run], &new_data[pos + run], m) == 0) break;
      run += m;
    }
    if (run) {
      STRATA_CO_TRY(co_await top.co_write(off + pos, {&old_data[pos], run}));
      pos += run;
    } else {
      pos += n;
    }
  }
  co_return Result<void>{};
}

Task<Result<void>> co_copy_differences(Drive& top, Drive* fresh, bool progress_bar) {
  Node* node = top.edge()->node();
  uint64_t size = top.size();
  uint64_t grain = std::max<uint64_t>(node->driver().limits().opt_transfer, 512);
  std::vector<uint8_t> old_data(kChunk), new_data(kChunk);
  Progress progress(progress_bar);
  progress.update(0);
  for (uint64_t off = 0; off < size;) {
    uint64_t n = std::min(kChunk, size - off);
    STRATA_CO_TRY_ASSIGN(BlockStatus st, co_await node->co_block_status(off, n, nullptr));
    n = std::min(n, st.bytes);
    if (!(st.flags & kStatusAllocated)) {
      STRATA_CO_TRY(co_await co_keep_old_view(top, fresh, off, n, grain, old_data, new_data));
    }
    off += n;
    progress.update(100.0 * double(off) / double(size));
  }
  progress.finish();
  co_return co_await top.co_flush();
}

Task<Result<std::unique_ptr<Drive>>> co_open_new_backing(Engine& engine, const RebaseArgs& a) {
  OpenSpec spec;
  spec.filename = relative_to_image(a.backing, a.common.spec.filename);
  spec.format = a.backing_format;
  spec.force_share = true;
  auto drive = co_await co_open_image(engine, spec);
  if (!drive) {
    std::string why = drive.error().message;
    std::string prefix = "Could not open '" + spec.filename + "': ";
    if (why.rfind(prefix, 0) == 0) why = why.substr(prefix.size());
    co_return Error{drive.error().code,
                    "Could not open new backing file '" + a.backing + "': " + why};
  }
  co_return drive;
}

Task<Result<void>> co_rebase_open(Engine& engine, const RebaseArgs& a) {
  OpenSpec spec = a.common.spec;
  spec.writable = true;
  spec.no_backing = a.unsafe;
  STRATA_CO_TRY_ASSIGN(auto top, co_await co_open_image(engine, spec));
  ImageOps* q = top->edge()->node()->driver().image_ops();
  Result<void> r;
  if (!q) {
    r = Error{ENOTSUP,
              "Could not change the backing file to '" + a.backing + "': Operation not supported"};
  }
  std::unique_ptr<Drive> fresh;
  if (r && !a.unsafe && !a.backing.empty()) {
    auto opened = co_await co_open_new_backing(engine, a);
    if (opened) {
      fresh = std::move(*opened);
    } else {
      r = std::move(opened).error();
    }
  }
  if (r && !a.unsafe) r = co_await co_copy_differences(*top, fresh.get(), a.progress);
  if (r) {
    r = co_await q->co_change_backing_file(a.backing, a.backing_format);
    if (!r) {
      r = Error{r.error().code,
                "Could not change the backing file to '" + a.backing + "': " + r.error().message};
    }
  }
  if (fresh) co_await fresh->co_close();
  co_await top->co_close();
  co_return r;
}

Task<int> co_rebase(Engine& engine, RebaseArgs a) {
  if (!a.backing.empty() && a.backing_format.empty()) {
    error_report("Could not change the backing file to '" + a.backing +
                 "': backing format must be specified");
    co_return 1;
  }
  auto r = co_await co_rebase_open(engine, a);
  if (!r) {
    error_report(r.error().message);
    co_return 1;
  }
  co_return 0;
}

}  // namespace

int cmd_rebase(Engine& engine, const Args& args) {
  auto longopts = long_options(kLongObject | kLongImageOpts | kLongForceShare, {});
  OptionParser p(args, "hf:F:b:upt:T:qU", longopts.data());
  RebaseArgs a;
  for (int c; (c = p.next()) != -1;) {
    OptionUse use = handle_common_option(c, p.arg, &a.common);
    if (use == OptionUse::kError) return 1;
    if (use == OptionUse::kHandled) continue;
    switch (c) {
      case 'b':
        a.backing = p.arg;
        a.has_backing = true;
        break;
      case 'F':
        a.backing_format = p.arg;
        break;
      case 'u':
        a.unsafe = true;
        break;
      case 'p':
        a.progress = true;
        break;
      case 'T':
        break;  // source cache mode: reads are not cached offline either way
      case 'h':
        std::printf(
            "Usage: strata-img rebase [-q] [-f fmt] [-p] [-u] -b backing_file [-F backing_fmt] "
            "file\n");
        return 0;
      default:
        return 1;
    }
  }
  if (p.rest.size() != 1) {
    return usage_error("Expecting one image file name");
  }
  if (!a.has_backing && !a.unsafe) {
    return usage_error("Must specify backing file (-b) or use unsafe mode (-u)");
  }
  if (a.common.quiet) a.progress = false;
  a.common.spec.filename = p.rest[0];
  return engine.run(co_rebase(engine, a));
}

}  // namespace strata::img
