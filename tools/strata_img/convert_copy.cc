// The copy loop of strata-img convert: N claims in flight (default 8),
// writes in order unless -W. As qemu-img: zero ranges are skipped on fresh
// targets and written as zeroes otherwise, runs of -S bytes of zeroes
// inside data are not written, -S 0 writes every byte; with a backing file
// on the target only what the source's top layer allocates is copied; -c
// works in whole target clusters. Also -l's snapshot parameter.
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "base/sync.h"
#include "block/core/image_ops.h"
#include "block/core/options.h"
#include "strata_img/common.h"
#include "strata_img/convert.h"

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
    auto st = co_await co_chain_status(c.src, off, c.size - off, base);
    if (!st) {
      co_return Error{st.error().code, "error while reading block status at offset " +
                                           std::to_string(off) + ": " + st.error().message};
    }
    c.known = {off, off + st->bytes, kind_of(c, *st)};
  }
  *len = std::min(*len, c.known.end - off);
  co_return c.known.kind;
}

struct Extent {
  uint64_t offset;
  uint64_t length;
  Kind kind;
};

// What went wrong, as qemu-img says it (the errno's text), or the driver's
// own message when it says more (a damaged vmdk or vdi names the table).
std::string why(const Error& e) {
  std::string text = std::strerror(e.code);
  if (e.message.empty() || e.message.find(text) != std::string::npos) return text;
  return e.message;
}

// Reads [off, off + len) of the source; with --salvage, a range that fails
// is read again sector by sector and the sectors that fail become zeroes
// (with qemu-img's warning).
Task<Result<void>> co_read_source(Copier& c, uint64_t off, uint8_t* buf, uint64_t len) {
  auto r = co_await c.src->co_preadv(off, IoVec(buf, len), 0);
  if (r || !c.plan.salvage) {
    if (!r) {
      co_return Error{r.error().code,
                      "error while reading at byte " + std::to_string(off) + ": " + why(r.error())};
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

Error write_error(uint64_t offset, const Error& e) {
  return Error{e.code, "error while writing at byte " + std::to_string(offset) + ": " + why(e)};
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
  if (!r) co_return write_error(e.offset, r.error());
  co_return r;
}

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
  bool whole =
      extents.size() > 1 || extents[0].kind == Kind::kData || extents[0].kind == Kind::kZeroData;
  if (whole) STRATA_CO_TRY(co_await co_read_source(c, off, buf.data(), end - off));
  bool go = co_await co_wait_turn(c, index);
  if (!go) co_return c.error;
  co_await c.rate.co_account(extents[0].kind == Kind::kSkip && !whole ? 0 : end - off);
  Result<void> r;
  if (whole) {
    r = co_await co_write_compressed_cluster(c, off, buf.data(), end - off);
  } else if (extents[0].kind == Kind::kZero) {
    r = co_await c.dst->co_pwrite_zeroes(off, end - off, kReqMayUnmap);
  }
  if (!r) co_return write_error(off, r.error());
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
  if (c.plan.compress) co_return co_await co_copy_compressed(c, off, end, extents, index, buf);
  for (const auto& e : extents) {
    if (e.kind != Kind::kData) continue;
    STRATA_CO_TRY(co_await co_read_source(c, e.offset, buf.data() + (e.offset - off), e.length));
  }
  bool go = co_await co_wait_turn(c, index);
  if (!go) co_return c.error;
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
  ImageOps* ops = src->driver().image_ops();
  if (!ops) {
    co_return Error{ENOTSUP, "Block format '" + src->driver_name() +
                                 "' used by device '' does not support temporarily loading "
                                 "internal snapshots"};
  }
  if (snapshot.keyed) co_return co_await ops->co_snapshot_load_tmp(snapshot.id, snapshot.name);
  auto r = co_await ops->co_snapshot_load_tmp(snapshot.id_or_name, "");
  if (!r && r.error().code == ENOENT) {
    r = co_await ops->co_snapshot_load_tmp("", snapshot.id_or_name);
  }
  co_return r;
}

}  // namespace strata::img
