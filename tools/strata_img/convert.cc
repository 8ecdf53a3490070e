// strata-img convert [-c] [-p] [-q] [-n] [-W] [-m N] [-f FMT] [-O FMT] [-B BACKING [-F FMT]]
//                    [-o OPTIONS] [-t CACHE] [-T CACHE] [-S SIZE] [-U] [--target-is-zero] SRC DST
// Copies with N requests in flight (default 8); writes stay in order unless
// -W. Zero ranges are skipped on fresh targets and written as zeroes
// otherwise; with -B only what the source's top layer allocates is copied.
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include <fcntl.h>

#include "base/fs.h"
#include "base/sync.h"
#include "block/core/options.h"
#include "block/drivers/qcow2/create.h"
#include "strata_img/bitmap.h"
#include "strata_img/common.h"
#include "strata_img/convert.h"

namespace strata::img {

namespace {

constexpr uint64_t kChunk = 2 << 20;

enum class Kind { kData, kZero, kSkip };

// The last block-status answer, reused by later chunks inside it (as
// qemu-img's sector_next_status): one query per extent of the source, not
// one per 2 MiB chunk (on tmpfs each query of a hole costs two lseeks that
// scan the page cache).
struct KnownExtent {
  uint64_t start = 0;
  uint64_t end = 0;
  Kind kind = Kind::kData;
};

struct Copier {
  Copier(Engine& e, const ConvertPlan& p)
      : engine(e), plan(p), status_lock(e.loop()), turn(e.loop()) {}
  Copier(const Copier&) = delete;
  Engine& engine;
  const ConvertPlan& plan;
  Node* src = nullptr;
  Child* dst = nullptr;
  uint64_t size = 0;
  uint64_t cursor = 0;
  uint64_t next_index = 0;
  uint64_t write_turn = 0;
  uint64_t done_bytes = 0;
  uint64_t cluster = 65536;
  bool dst_zeroed = false;
  Result<void> error;
  KnownExtent known;
  CoMutex status_lock;  // one block-status query at a time, so others reuse it
  CoQueue turn;
  Progress* progress = nullptr;
};

// Whether the `n` bytes at `p` are all zero. Comparing the buffer with itself
// shifted by one byte runs at memcmp's vector speed, not a byte loop's (whole
// 2 MiB chunks of zeroes are common in VM images).
bool all_zero(const uint8_t* p, uint64_t n) {
  return n == 0 || (p[0] == 0 && std::memcmp(p, p + 1, n - 1) == 0);
}

Task<Result<void>> co_write_data(Copier& c, uint64_t off, const uint8_t* buf, uint64_t len) {
  const ConvertPlan& p = c.plan;
  if (p.compress) {
    IoVec iov(const_cast<uint8_t*>(buf), len);
    co_return co_await c.dst->co_pwritev(off, iov, kReqWriteCompressed);
  }
  if (!c.dst_zeroed || p.sparse_size == 0) {
    co_return co_await c.dst->co_pwrite(off, {buf, len});
  }
  // Skip runs of zeroes (at sparse_size granularity) on a zeroed target.
  uint64_t g = p.sparse_size;
  for (uint64_t pos = 0; pos < len;) {
    uint64_t n = std::min(g - (off + pos) % g, len - pos);
    bool zero = all_zero(buf + pos, n);
    uint64_t run = n;
    while (pos + run < len) {
      uint64_t m = std::min(g, len - pos - run);
      if (all_zero(buf + pos + run, m) != zero) break;
      run += m;
    }
    if (!zero) STRATA_CO_TRY(co_await c.dst->co_pwrite(off + pos, {buf + pos, run}));
    pos += run;
  }
  co_return Result<void>{};
}

Kind kind_of(const Copier& c, const ChainStatus& st) {
  if (st.zero) return (c.plan.target_has_backing || !c.dst_zeroed) ? Kind::kZero : Kind::kSkip;
  if (st.data) return Kind::kData;
  return c.plan.target_has_backing ? Kind::kSkip : (c.dst_zeroed ? Kind::kSkip : Kind::kZero);
}

// What to do with [off, off + *len); shortens *len to the part that has
// one answer. Asks about the whole rest of the source and remembers the
// answer for the chunks that follow.
Task<Result<Kind>> co_classify(Copier& c, uint64_t off, uint64_t* len) {
  co_await c.status_lock.co_lock();
  CoMutex::Guard guard(&c.status_lock);
  if (off < c.known.start || off >= c.known.end) {
    Node* base = nullptr;
    if (c.plan.target_has_backing) {
      Child* b = c.src->backing();
      base = b ? b->node() : nullptr;
    }
    STRATA_CO_TRY_ASSIGN(ChainStatus st, co_await co_chain_status(c.src, off, c.size - off, base));
    c.known = {off, off + st.bytes, kind_of(c, st)};
  }
  *len = std::min(*len, c.known.end - off);
  co_return c.known.kind;
}

struct Extent {
  uint64_t offset;
  uint64_t length;
  Kind kind;
};

// Copies [off, end): reads run in parallel with other workers; writes wait
// for this claim's turn unless out-of-order writes are allowed.
Task<Result<void>> co_copy_range(Copier& c, uint64_t off, uint64_t end, uint64_t index,
                                 std::vector<uint8_t>& buf) {
  std::vector<Extent> extents;
  for (uint64_t pos = off; pos < end;) {
    uint64_t n = end - pos;
    STRATA_CO_TRY_ASSIGN(Kind k, co_await co_classify(c, pos, &n));
    extents.push_back({pos, n, k});
    pos += n;
  }
  for (const auto& e : extents) {
    if (e.kind != Kind::kData) continue;
    STRATA_CO_TRY(
        co_await c.src->co_preadv(e.offset, IoVec(buf.data() + (e.offset - off), e.length), 0));
  }
  if (!c.plan.out_of_order) {
    while (c.write_turn != index && c.error) co_await c.turn.wait();
    if (!c.error) co_return c.error;
  }
  for (const auto& e : extents) {
    if (e.kind == Kind::kData) {
      STRATA_CO_TRY(co_await co_write_data(c, e.offset, buf.data() + (e.offset - off), e.length));
    } else if (e.kind == Kind::kZero) {
      STRATA_CO_TRY(co_await c.dst->co_pwrite_zeroes(e.offset, e.length, kReqMayUnmap));
    }
  }
  co_return Result<void>{};
}

Task<void> co_worker(Copier* c) {
  std::vector<uint8_t> buf(kChunk);
  while (c->error && c->cursor < c->size) {
    uint64_t off = c->cursor;
    uint64_t len = std::min(kChunk, c->size - off);
    if (c->plan.compress) len = std::min(len, c->cluster - off % c->cluster);
    c->cursor = off + len;
    uint64_t index = c->next_index++;
    auto r = co_await co_copy_range(*c, off, off + len, index, buf);
    if (!r && c->error) c->error = r;
    if (r) c->write_turn = index + 1;
    c->turn.wake_all();
    c->done_bytes += len;
    c->progress->update(double(c->done_bytes) * 100.0 / double(std::max<uint64_t>(c->size, 1)));
  }
}

}  // namespace

Task<Result<void>> co_copy_image(Engine& engine, const ConvertPlan& plan, Node* src, Child* dst,
                                 bool dst_zeroed, Progress* progress) {
  Copier c(engine, plan);
  c.src = src;
  c.dst = dst;
  c.size = src->size();
  c.dst_zeroed = dst_zeroed;
  c.progress = progress;
  c.cluster = plan.cluster_size ? plan.cluster_size : 65536;
  TaskGroup group(engine.loop());
  for (int i = 0; i < std::max(1, plan.parallel); i++) group.spawn(co_worker(&c));
  co_await group.co_join();
  if (!c.error) co_return c.error;
  co_return co_await dst->co_flush();
}

}  // namespace strata::img

namespace strata::img {

namespace {

struct ConvertArgs {
  CommonOptions common;  // the source: -f, -T (its cache), -U, --image-opts; -q
  std::string out_format = "raw";
  std::string out_name;
  std::map<std::string, std::string> opts;
  std::string dst_cache;
  bool no_create = false;
  bool target_is_zero = false;
  bool progress = false;
  bool bitmaps = false;      // --bitmaps (strata_img/bitmap.h)
  bool skip_broken = false;  // --skip-broken-bitmaps
  ConvertPlan plan;
};

Task<Result<void>> co_create_target(Engine& engine, const ConvertArgs& a, uint64_t size,
                                    uint64_t* cluster) {
  if (a.out_format == "raw") {
    if (a.plan.compress) co_return Error{ENOTSUP, "Compression not supported for this file format"};
    if (!a.plan.target_has_backing && a.opts.count("backing_file")) {
      co_return Error{ENOTSUP, "Backing file not supported for file format 'raw'"};
    }
    STRATA_CO_TRY_ASSIGN(
        int fd, co_await fs::co_open(engine.loop(), a.out_name, O_RDWR | O_CREAT | O_TRUNC));
    auto r = co_await fs::co_ftruncate(engine.loop(), fd, size);
    (void)co_await fs::co_close(engine.loop(), fd);
    co_return r;
  }
  if (a.out_format != "qcow2")
    co_return Error{EINVAL, "Unknown file format '" + a.out_format + "'"};
  qcow2::CreateOptions o;
  o.size = size;
  auto get = [&](const char* k) {
    auto it = a.opts.find(k);
    return it == a.opts.end() ? std::string() : it->second;
  };
  if (!get("cluster_size").empty() && !parse_img_size(get("cluster_size"), &o.cluster_size)) {
    co_return Error{EINVAL, "Parameter 'cluster_size' expects a size"};
  }
  if (!get("compat").empty()) {
    STRATA_CO_TRY_ASSIGN(o.version, qcow2::parse_compat(get("compat")));
  }
  if (!get("refcount_bits").empty()) o.refcount_bits = uint32_t(std::stoul(get("refcount_bits")));
  if (!get("lazy_refcounts").empty()) parse_bool_word(get("lazy_refcounts"), &o.lazy_refcounts);
  o.backing_file = get("backing_file");
  o.backing_format = get("backing_fmt");
  STRATA_CO_TRY(qcow2::parse_feature_options(a.opts, &o));
  *cluster = o.cluster_size;
  co_return co_await qcow2::co_create_image(engine, a.out_name, o);
}

Task<int> co_convert(Engine& engine, ConvertArgs a) {
  auto src = co_await co_open_image(engine, a.common.spec);
  if (!src) {
    error_report(src.error().message);
    co_return 1;
  }
  Node* src_node = (*src)->edge()->node();
  if (a.bitmaps && !check_convert_bitmaps(*src_node, a.skip_broken)) {
    co_await (*src)->co_close();
    co_return 1;
  }
  uint64_t size = src_node->size();
  uint64_t cluster = 0;
  if (!a.no_create) {
    auto r = co_await co_create_target(engine, a, size, &cluster);
    if (!r) {
      error_report(a.out_name + ": error while converting " + a.out_format + ": " +
                   r.error().message);
      co_await (*src)->co_close();
      co_return 1;
    }
  }
  OpenSpec dspec;
  dspec.filename = a.out_name;
  dspec.format = a.no_create ? "" : a.out_format;
  if (a.no_create && a.out_format != "raw") dspec.format = a.out_format;
  dspec.writable = true;
  dspec.cache = a.dst_cache;
  auto dst = co_await co_open_image(engine, dspec);
  if (!dst) {
    error_report(dst.error().message);
    co_await (*src)->co_close();
    co_return 1;
  }
  Node* dst_node = (*dst)->edge()->node();
  if (a.bitmaps && !target_takes_bitmaps(*dst_node)) {
    co_await (*dst)->co_close();
    co_await (*src)->co_close();
    co_return 1;
  }
  if (cluster == 0) cluster = 65536;
  a.plan.cluster_size = cluster;
  bool zeroed = (!a.no_create && !a.plan.target_has_backing) || a.target_is_zero;
  if (a.no_create && dst_node->size() < size) {
    error_report("Target image is smaller than the source");
    co_return 1;
  }
  Progress progress(a.progress && !a.common.quiet);
  progress.update(0);
  auto r = co_await co_copy_image(engine, a.plan, src_node, (*dst)->edge(), zeroed, &progress);
  progress.finish();
  bool bitmaps_ok = !r || !a.bitmaps ||
                    co_await co_copy_convert_bitmaps(engine, *src_node, *dst_node, a.skip_broken);
  co_await (*dst)->co_close();
  co_await (*src)->co_close();
  if (!r) {
    error_report("error while writing: " + r.error().message);
    co_return 1;
  }
  co_return bitmaps_ok ? 0 : 1;
}

}  // namespace

int cmd_convert(Engine& engine, const Args& args) {
  enum { kTargetIsZero = kOptFirstOwn, kSalvage, kBitmaps, kSkipBroken };
  auto longopts = long_options(kLongImageOpts | kLongObject | kLongForceShare,
                               {{"target-is-zero", no_argument, nullptr, kTargetIsZero},
                                {"salvage", no_argument, nullptr, kSalvage},
                                {"bitmaps", no_argument, nullptr, kBitmaps},
                                {"skip-broken-bitmaps", no_argument, nullptr, kSkipBroken}});
  OptionParser p(args, "hf:O:B:F:Cco:l:S:pt:T:qnm:WrU", longopts.data());
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
        break;
      case 'B':
        a.opts["backing_file"] = p.arg;
        break;
      case 'F':
        a.opts["backing_fmt"] = p.arg;
        break;
      case 'c':
        a.plan.compress = true;
        break;
      case 'o':
        parse_option_string(p.arg, &a.opts);
        break;
      case 'S':
        if (!parse_img_size(p.arg, &a.plan.sparse_size)) {
          error_report(
              "Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 "
              "up to 2147483136 bytes");
          return 1;
        }
        break;
      case 'p':
        a.progress = true;
        break;
      case 'n':
        a.no_create = true;
        break;
      case 'm':
        a.plan.parallel = std::atoi(p.arg.c_str());
        break;
      case 'W':
        a.plan.out_of_order = true;
        break;
      case kTargetIsZero:
        a.target_is_zero = true;
        break;
      case kBitmaps:
        a.bitmaps = true;
        break;
      case kSkipBroken:
        a.skip_broken = true;
        break;
      case kSalvage:
      case 'C':
      case 'r':
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
  if (p.rest.size() < 2) {
    error_report("Expecting image file name");
    return 1;
  }
  if (p.rest.size() > 2) {
    error_report("Converting more than one source image is not supported yet");
    return 1;
  }
  if (a.plan.parallel < 1 || a.plan.parallel > 16) {
    error_report("Invalid number of coroutines. Allowed number of coroutines is between 1 and 16");
    return 1;
  }
  if (a.skip_broken && !a.bitmaps) {
    error_report("Use of --skip-broken-bitmaps requires --bitmaps");
    return 1;
  }
  if (a.opts.count("backing_fmt") && !a.opts.count("backing_file")) {
    error_report("Backing format cannot be used without backing file");
    return 1;
  }
  a.plan.target_has_backing = a.opts.count("backing_file") > 0;
  a.common.spec.filename = p.rest[0];
  a.out_name = p.rest[1];
  return engine.run(co_convert(engine, a));
}

}  // namespace strata::img
