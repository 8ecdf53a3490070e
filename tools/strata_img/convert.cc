// strata-img convert [-c] [-p] [-q] [-n] [-W] [-m N] [-r RATE] [-f FMT] [-O FMT]
//                    [-B BACKING [-F FMT]] [-o OPTIONS] [-l SNAPSHOT] [-t CACHE] [-T CACHE]
//                    [-S SIZE] [-U] [--target-is-zero] [--target-image-opts] [--salvage] SRC DST
// Copies with N requests in flight (default 8); writes stay in order unless
// -W. As qemu-img: zero ranges are skipped on fresh targets and written as
// zeroes otherwise, runs of -S bytes of zeroes inside data are not written,
// -S 0 writes every byte; with -B only what the source's top layer
// allocates is copied.
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include <fcntl.h>

#include "base/fs.h"
#include "base/sync.h"
#include "block/core/options.h"
#include "block/drivers/qcow2/create.h"
#include "block/drivers/qcow2/qcow2.h"
#include "strata_img/bitmap.h"
#include "strata_img/common.h"
#include "strata_img/convert.h"
#include "strata_img/create_image.h"
#include "strata_img/create_opts.h"

namespace strata::img {

namespace {

constexpr uint64_t kChunk = 2 << 20;

// kZeroData: zeroes written as data (-S 0).
enum class Kind { kData, kZero, kSkip, kZeroData };

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
      : engine(e), plan(p), status_lock(e.loop()), turn(e.loop()), rate(e.loop(), p.rate_limit) {}
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
  RateLimit rate;  // -r
};

// Whether the `n` bytes at `p` are all zero. Comparing the buffer with itself
// shifted by one byte runs at memcmp's vector speed, not a byte loop's (whole
// 2 MiB chunks of zeroes are common in VM images).
bool all_zero(const uint8_t* p, uint64_t n) {
  return n == 0 || (p[0] == 0 && std::memcmp(p, p + 1, n - 1) == 0);
}

constexpr uint64_t kSector = 512;

// qemu-img's is_allocated_sectors: whether the first of `n` sectors at `p`
// (sector `first` of the image) holds data, and in *run how many sectors
// share that answer, the end moved to an `align`-sector boundary where
// the next run starts (data rounded up, zeroes down).
bool sectors_allocated(const uint8_t* p, uint64_t n, uint64_t first, uint64_t align,
                       uint64_t* run) {
  bool zero = all_zero(p, kSector);
  uint64_t i = 1;
  while (i < n && all_zero(p + i * kSector, kSector) == zero) i++;
  if (i < n) {
    uint64_t tail = (first + i) & (align - 1);
    if (tail) {
      if (zero && i <= tail) zero = false;  // the data after it rewrites this anyway
      if (!zero) {
        i = std::min(n, i + align - tail);
      } else {
        i -= tail;
      }
    }
  }
  *run = i;
  return !zero;
}

// qemu-img's is_allocated_sectors_min: a run starting with data takes in
// zero runs shorter than `min` sectors, so that writes are not split for
// small holes.
bool sectors_allocated_min(const uint8_t* p, uint64_t n, uint64_t first, uint64_t align,
                           uint64_t min, uint64_t* run) {
  min = std::min(min, n);
  if (!sectors_allocated(p, n, first, align, run)) return false;
  uint64_t used = *run, checked = *run;
  while (checked < n) {
    uint64_t part;
    bool data =
        sectors_allocated(p + checked * kSector, n - checked, first + checked, align, &part);
    checked += part;
    if (data) {
      used = checked;
    } else if (part >= min) {
      break;
    }
  }
  *run = used;
  return true;
}

// Writes `len` bytes at `off` (a range the source allocates), not writing
// runs of -S bytes of zeroes on a zeroed target.
Task<Result<void>> co_write_data(Copier& c, uint64_t off, const uint8_t* buf, uint64_t len) {
  const ConvertPlan& p = c.plan;
  if (p.compress) {
    IoVec iov(const_cast<uint8_t*>(buf), len);
    co_return co_await c.dst->co_pwritev(off, iov, kReqWriteCompressed);
  }
  if (p.sparse_size == 0 || off % kSector || len % kSector) {
    co_return co_await c.dst->co_pwrite(off, {buf, len});
  }
  uint64_t min = p.sparse_size / kSector;
  uint64_t align = 1;
  while (align * 2 <= min) align *= 2;  // pow2floor
  for (uint64_t pos = 0; pos < len;) {
    uint64_t run = 0;
    bool data = sectors_allocated_min(buf + pos, (len - pos) / kSector, (off + pos) / kSector,
                                      align, min, &run);
    uint64_t bytes = run * kSector;
    if (data) {
      STRATA_CO_TRY(co_await c.dst->co_pwrite(off + pos, {buf + pos, bytes}));
    } else if (!c.dst_zeroed) {
      STRATA_CO_TRY(co_await c.dst->co_pwrite_zeroes(off + pos, bytes, kReqMayUnmap));
    }
    pos += bytes;
  }
  co_return Result<void>{};
}

Kind kind_of(const Copier& c, const ChainStatus& st) {
  bool full = c.plan.sparse_size == 0;  // -S 0: every byte is written
  if (st.zero) {
    if (full) return Kind::kZeroData;
    return (c.plan.target_has_backing || !c.dst_zeroed) ? Kind::kZero : Kind::kSkip;
  }
  if (st.data) return Kind::kData;
  if (c.plan.target_has_backing) return Kind::kSkip;
  if (full) return Kind::kZeroData;
  return c.dst_zeroed ? Kind::kSkip : Kind::kZero;
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

// Reads [off, off + len) of the source; with --salvage, a range that fails
// is read again sector by sector and the sectors that fail become zeroes
// (with qemu-img's warning).
Task<Result<void>> co_read_source(Copier& c, uint64_t off, uint8_t* buf, uint64_t len) {
  auto r = co_await c.src->co_preadv(off, IoVec(buf, len), 0);
  if (r || !c.plan.salvage) {
    if (!r) {
      co_return Error{r.error().code, "error while reading at byte " + std::to_string(off) + ": " +
                                          std::strerror(r.error().code)};
    }
    co_return r;
  }
  for (uint64_t pos = 0; pos < len; pos += kSector) {
    uint64_t n = std::min(kSector, len - pos);
    auto one = co_await c.src->co_preadv(off + pos, IoVec(buf + pos, n), 0);
    if (one) continue;
    if (!c.plan.quiet) {
      error_report("warning: error while reading offset " + std::to_string(off + pos) + ": " +
                   std::strerror(one.error().code));
    }
    std::memset(buf + pos, 0, n);
  }
  co_return Result<void>{};
}

Task<Result<void>> co_write_extent(Copier& c, const Extent& e, uint8_t* data) {
  co_await c.rate.co_account(e.kind == Kind::kSkip ? 0 : e.length);
  Result<void> r;
  if (e.kind == Kind::kData) {
    r = co_await co_write_data(c, e.offset, data, e.length);
  } else if (e.kind == Kind::kZeroData) {
    std::memset(data, 0, e.length);
    r = co_await c.dst->co_pwrite(e.offset, {data, e.length});
  } else if (e.kind == Kind::kZero) {
    r = co_await c.dst->co_pwrite_zeroes(e.offset, e.length, kReqMayUnmap);
  }
  if (!r) {
    co_return Error{r.error().code, "error while writing at byte " + std::to_string(e.offset) +
                                        ": " + std::strerror(r.error().code)};
  }
  co_return r;
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
  // A compressed write covers a whole cluster (the claim is one): any data
  // in it makes all of it data, as qemu-img does.
  if (c.plan.compress && extents.size() > 1 &&
      std::any_of(extents.begin(), extents.end(),
                  [](const Extent& e) { return e.kind == Kind::kData; })) {
    extents = {{off, end - off, Kind::kData}};
  }
  for (const auto& e : extents) {
    if (e.kind != Kind::kData) continue;
    STRATA_CO_TRY(co_await co_read_source(c, e.offset, buf.data() + (e.offset - off), e.length));
  }
  if (!c.plan.out_of_order) {
    while (c.write_turn != index && c.error) co_await c.turn.wait();
    if (!c.error) co_return c.error;
  }
  for (const auto& e : extents) {
    STRATA_CO_TRY(co_await co_write_extent(c, e, buf.data() + (e.offset - off)));
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

bool parse_snapshot_param(const std::string& text, SnapshotParam* out) {
  if (text.rfind("snapshot.", 0) != 0) {
    out->id_or_name = text;
    return true;
  }
  std::map<std::string, std::string> kv;
  parse_option_string(text, &kv);
  for (const auto& [k, v] : kv) {
    if (k == "snapshot.id") {
      out->id = v;
    } else if (k == "snapshot.name") {
      out->name = v;
    } else {
      error_report("Invalid parameter '" + k + "'");
      error_report("Failed in parsing snapshot param '" + text + "'");
      return false;
    }
  }
  out->keyed = true;
  return true;
}

Task<Result<void>> co_load_snapshot(Node* src, const SnapshotParam& snapshot) {
  auto* q = dynamic_cast<qcow2::Qcow2Driver*>(&src->driver());
  if (!q) {
    co_return Error{ENOTSUP, "Block format '" + src->driver_name() +
                                 "' used by device '' does not support temporarily loading "
                                 "internal snapshots"};
  }
  if (snapshot.keyed) co_return co_await q->co_snapshot_load_tmp(snapshot.id, snapshot.name);
  auto r = co_await q->co_snapshot_load_tmp(snapshot.id_or_name, "");
  if (!r && r.error().code == ENOENT) r = co_await q->co_snapshot_load_tmp("", snapshot.id_or_name);
  co_return r;
}

}  // namespace strata::img

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

Task<int> co_convert(Engine& engine, ConvertArgs a) {
  auto src = co_await co_open_image(engine, a.common.spec);
  if (!src) {
    error_report(src.error().message);
    co_return 1;
  }
  Node* src_node = (*src)->edge()->node();
  int rc = 1;
  std::unique_ptr<Drive> dst;
  Progress progress(a.progress && !a.common.quiet);
  progress.update(0);
  do {
    if (a.snapshot.given()) {
      auto r = co_await co_load_snapshot(src_node, a.snapshot);
      if (!r) {
        error_report("Failed to load snapshot: " + r.error().message);
        break;
      }
    }
    uint64_t size = (src_node->size() + 511) / 512 * 512;
    std::optional<CreateOptionSet> set;
    if (!a.no_create) {
      auto opts = target_options(a, size);
      if (!opts) {
        error_report(opts.error().message);
        break;
      }
      set = std::move(*opts);
    }
    if (!target_checks(a, set)) break;
    a.plan.target_has_backing = (set && set->has("backing_file")) || a.has_backing;
    if (a.bitmaps && !check_convert_bitmaps(*src_node, a.skip_broken)) break;
    if (set) {
      auto r = co_await co_create_image_file(engine, a.out_format, a.out_name, *set);
      if (!r) {
        error_report(a.out_name + ": error while converting " + a.out_format + ": " +
                     r.error().message);
        break;
      }
      a.plan.cluster_size = set->number("cluster_size", 65536);
    }
    auto opened = co_await co_open_target(engine, a);
    if (!opened) {
      error_report(opened.error().message);
      break;
    }
    dst = std::move(*opened);
    Node* dst_node = dst->edge()->node();
    if (a.bitmaps && !target_takes_bitmaps(*dst_node)) break;
    if (a.plan.compress && dst_node->driver_name() != "qcow2") {
      error_report("Compression not supported for this file format");
      break;
    }
    if (a.no_create && dst_node->size() < size) {
      error_report("output file is smaller than input file");
      break;
    }
    if (a.plan.cluster_size == 0) a.plan.cluster_size = 65536;
    bool zeroed =
        (!a.no_create && !a.plan.target_has_backing && a.plan.sparse_size) || a.target_is_zero;
    auto r = co_await co_copy_image(engine, a.plan, src_node, dst->edge(), zeroed, &progress);
    if (!r) {
      error_report(r.error().message);
      break;
    }
    if (a.bitmaps) {
      bool copied = co_await co_copy_convert_bitmaps(engine, *src_node, *dst_node, a.skip_broken);
      if (!copied) break;
    }
    progress.update(100);
    rc = 0;
  } while (false);
  progress.finish();
  if (dst) co_await dst->co_close();
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
