// strata-img convert [-c] [-p] [-q] [-n] [-W] [-m N] [-f FMT] [-O FMT] [-B BACKING [-F FMT]]
//                    [-o OPTIONS] [-t CACHE] [-T CACHE] [-S SIZE] [-U] [--target-is-zero] SRC DST
// Copies with N requests in flight (default 8); writes stay in order unless
// -W. Zero ranges are skipped on fresh targets and written as zeroes
// otherwise; with -B only what the source's top layer allocates is copied.
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "base/sync.h"
#include "block/core/options.h"
#include "block/drivers/qcow2/qcow2.h"
#include "strata_img/bitmap.h"
#include "strata_img/common.h"
#include "strata_img/convert.h"
#include "strata_img/target.h"

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

// One whole target cluster (or the image's last, shorter one) read from the
// source, as qemu-img compresses: written compressed, or, when it is all
// zeroes (and -S is not 0), skipped on a zeroed target and written as
// zeroes on any other.
Task<Result<void>> co_write_compressed_cluster(Copier& c, uint64_t off, const uint8_t* buf,
                                               uint64_t len) {
  if (c.plan.sparse_size && all_zero(buf, len)) {
    if (c.dst_zeroed) co_return Result<void>{};
    co_return co_await c.dst->co_pwrite_zeroes(off, len, kReqMayUnmap);
  }
  IoVec iov(const_cast<uint8_t*>(buf), len);
  co_return co_await c.dst->co_pwritev(off, iov, kReqWriteCompressed);
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

// Waits for this claim's turn to write unless out-of-order writes are
// allowed; false when another claim failed meanwhile.
Task<bool> co_wait_turn(Copier& c, uint64_t index) {
  if (c.plan.out_of_order) co_return bool(c.error);
  while (c.write_turn != index && c.error) co_await c.turn.wait();
  co_return bool(c.error);
}

// -c: the claim is one target cluster. Unless the source answers one way
// for all of it (zero, or not to be copied), the whole cluster is read,
// whatever mix of data, holes and backing data it holds: compressed
// writes take whole clusters only.
Task<Result<void>> co_copy_compressed(Copier& c, uint64_t off, uint64_t end,
                                      const std::vector<Extent>& extents, uint64_t index,
                                      std::vector<uint8_t>& buf) {
  bool whole = extents.size() > 1 || extents[0].kind == Kind::kData;
  if (whole) STRATA_CO_TRY(co_await c.src->co_preadv(off, IoVec(buf.data(), end - off), 0));
  bool go = co_await co_wait_turn(c, index);
  if (!go) co_return c.error;
  if (whole) co_return co_await co_write_compressed_cluster(c, off, buf.data(), end - off);
  if (extents[0].kind == Kind::kZero) {
    co_return co_await c.dst->co_pwrite_zeroes(off, end - off, kReqMayUnmap);
  }
  co_return Result<void>{};
}

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
  if (c.plan.compress) co_return co_await co_copy_compressed(c, off, end, extents, index, buf);
  for (const auto& e : extents) {
    if (e.kind != Kind::kData) continue;
    STRATA_CO_TRY(
        co_await c.src->co_preadv(e.offset, IoVec(buf.data() + (e.offset - off), e.length), 0));
  }
  bool go = co_await co_wait_turn(c, index);
  if (!go) co_return c.error;
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
  bool out_format_given = false;  // -O (else raw, probed first with -n)
  std::string out_name;
  std::map<std::string, std::string> opts;
  std::string dst_cache;
  bool no_create = false;
  bool target_is_zero = false;
  bool progress = false;
  bool bitmaps = false;      // --bitmaps (strata_img/bitmap.h)
  bool skip_broken = false;  // --skip-broken-bitmaps
  std::string backing;       // -B
  std::string backing_fmt;   // -F
  ConvertPlan plan;
};

// The -o options of a new target, checked without touching it: their
// syntax (qemu-img's plain messages) then their values (as the creation
// would refuse them, with the "error while converting" prefix).
enum class Refusal { kNone, kPlain, kConverting };
struct TargetPlan {
  qcow2::CreateOptions options;
  Refusal refusal = Refusal::kNone;
  std::string message;
};

TargetPlan refuse(Refusal kind, std::string message) {
  TargetPlan p;
  p.refusal = kind;
  p.message = std::move(message);
  return p;
}

TargetPlan plan_new_target(const ConvertArgs& a, uint64_t size) {
  if (a.out_format != "qcow2" && a.out_format != "raw") {
    return refuse(Refusal::kPlain, "Unknown file format '" + a.out_format + "'");
  }
  if (auto r = check_create_option_syntax(a.out_format, a.opts); !r) {
    return refuse(Refusal::kPlain, r.error().message);
  }
  if (a.out_format == "raw" && !a.backing.empty()) {
    return refuse(Refusal::kPlain, "Backing file not supported for file format 'raw'");
  }
  auto o = parse_create_options(a.out_format, a.opts);
  if (!o) return refuse(Refusal::kConverting, o.error().message);
  if (!a.backing.empty()) o->backing_file = a.backing;
  if (!a.backing_fmt.empty()) o->backing_format = a.backing_fmt;
  if (a.bitmaps && a.out_format != "qcow2") {
    return refuse(Refusal::kPlain, "Format driver '" + a.out_format + "' does not support bitmaps");
  }
  TargetPlan p;
  p.options = *o;
  p.options.size = size;
  if (a.out_format == "qcow2") {
    if (auto r = qcow2::validate_create_options(p.options); !r) {
      return refuse(Refusal::kConverting, r.error().message);
    }
  }
  return p;
}

// Everything convert can refuse before the target is created, so that a
// refused convert leaves an existing target as it was: the options, and
// the backing file the new target is to name (qemu-img finds a missing one
// only when it opens the target it has just created).
Task<Result<qcow2::CreateOptions>> co_check_new_target(Engine& engine, const ConvertArgs& a,
                                                       uint64_t size) {
  TargetPlan plan = plan_new_target(a, size);
  if (plan.refusal == Refusal::kPlain) {
    error_report(plan.message);
    co_return Error{EINVAL, ""};
  }
  if (plan.refusal == Refusal::kConverting) {
    error_report(a.out_name + ": error while converting " + a.out_format + ": " + plan.message);
    co_return Error{EINVAL, ""};
  }
  const qcow2::CreateOptions& o = plan.options;
  if (!o.backing_file.empty()) {
    auto b = co_await co_backing_size(engine, o.backing_file, o.backing_format, a.out_name);
    if (!b) {
      error_report("Could not open '" + a.out_name +
                   "': Could not open backing file: " + b.error().message);
      co_return Error{EINVAL, ""};
    }
  }
  co_return plan.options;
}

// The cluster size compressed writes must cover (the target's).
Result<uint64_t> compress_cluster(Node& dst) {
  auto* q = dynamic_cast<qcow2::Qcow2Driver*>(&dst.driver());
  if (!q) return Error{ENOTSUP, "Compression not supported for this file format"};
  return q->header().cluster_size();
}

// The copy, with the target open; both images are closed by the callers.
Task<int> co_copy_into(Engine& engine, ConvertArgs& a, Node& src, Drive& dst) {
  Node* dst_node = dst.edge()->node();
  if (a.bitmaps && !target_takes_bitmaps(*dst_node)) co_return 1;
  uint64_t size = src.size();
  if (a.no_create && dst_node->size() < size) {
    error_report("output file is smaller than input file");
    co_return 1;
  }
  if (a.plan.compress) {
    auto cluster = compress_cluster(*dst_node);
    if (!cluster) {
      error_report(cluster.error().message);
      co_return 1;
    }
    a.plan.cluster_size = *cluster;
  }
  bool zeroed = (!a.no_create && !a.plan.target_has_backing) || a.target_is_zero;
  Progress progress(a.progress && !a.common.quiet);
  progress.update(0);
  auto r = co_await co_copy_image(engine, a.plan, &src, dst.edge(), zeroed, &progress);
  progress.finish();
  if (!r) {
    error_report("error while writing: " + r.error().message);
    co_return 1;
  }
  if (a.bitmaps) {
    bool copied = co_await co_copy_convert_bitmaps(engine, src, *dst_node, a.skip_broken);
    if (!copied) co_return 1;
  }
  co_return 0;
}

// With the source open: the target checked, created (locks first), opened
// and filled; closed again on every path.
Task<int> co_convert_from(Engine& engine, ConvertArgs& a, Node& src) {
  if (a.bitmaps && !check_convert_bitmaps(src, a.skip_broken)) co_return 1;
  if (a.plan.compress && a.out_format == "raw") {
    error_report("Compression not supported for this file format");
    co_return 1;
  }
  if (!a.no_create) {
    auto options = co_await co_check_new_target(engine, a, src.size());
    if (!options) co_return 1;
    auto r = co_await co_create_new_image(engine, a.out_format, a.out_name, *options);
    if (!r) {
      error_report(a.out_name + ": error while converting " + a.out_format + ": " +
                   r.error().message);
      co_return 1;
    }
  }
  OpenSpec dspec;
  dspec.filename = a.out_name;
  // -n without -O: the existing target is probed (qemu-img would take it as
  // raw and could write over a qcow2 header); an explicit -O is used as is.
  dspec.format = (a.no_create && !a.out_format_given) ? "" : a.out_format;
  dspec.writable = true;
  dspec.cache = a.dst_cache;
  auto dst = co_await co_open_image(engine, dspec);
  if (!dst) {
    error_report(dst.error().message);
    co_return 1;
  }
  int rc = co_await co_copy_into(engine, a, src, **dst);
  co_await (*dst)->co_close();
  co_return rc;
}

Task<int> co_convert(Engine& engine, ConvertArgs a) {
  auto src = co_await co_open_image(engine, a.common.spec);
  if (!src) {
    error_report(src.error().message);
    co_return 1;
  }
  int rc = co_await co_convert_from(engine, a, *(*src)->edge()->node());
  co_await (*src)->co_close();
  co_return rc;
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
        a.out_format_given = true;
        break;
      case 'B':
        a.backing = p.arg;
        break;
      case 'F':
        a.backing_fmt = p.arg;
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
  if ((a.opts.count("backing_fmt") || !a.backing_fmt.empty()) && !a.opts.count("backing_file") &&
      a.backing.empty()) {
    error_report("Backing format cannot be used without backing file");
    return 1;
  }
  a.plan.target_has_backing = a.opts.count("backing_file") > 0 || !a.backing.empty();
  a.common.spec.filename = p.rest[0];
  a.out_name = p.rest[1];
  return engine.run(co_convert(engine, a));
}

}  // namespace strata::img
