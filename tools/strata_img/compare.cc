// strata-img compare [-f FMT] [-F FMT] [-T CACHE] [-p] [-q] [-s] [-U] FILE1 FILE2
// qemu-img's algorithm: both chains are walked by block status; ranges
// that both read as zeroes are skipped, ranges both allocate are read and
// compared, a range only one allocates must read as zeroes there. With -s,
// different sizes or block status are a mismatch. Images of different
// sizes get "Warning: Image size mismatch!" and the longer one's tail
// must read as zeroes. Exit status: 0 identical, 1 different, 2 open
// error, 3 block status error, 4 read error.
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "strata_img/common.h"

namespace strata::img {

namespace {

constexpr uint64_t kChunk = 2 << 20;
constexpr uint64_t kSector = 512;
constexpr uint32_t kCompared =
    kStatusData | kStatusZero | kStatusOffsetValid | kStatusAllocated | kStatusEof;

// Offset of the first differing 512-byte sector, or `len` when equal.
uint64_t first_difference(const uint8_t* a, const uint8_t* b, uint64_t len) {
  for (uint64_t off = 0; off < len; off += kSector) {
    uint64_t n = std::min(kSector, len - off);
    if (std::memcmp(a + off, b + off, n) != 0) return off;
  }
  return len;
}

// Offset of the first sector of `buf` that is not zero, or `len`.
uint64_t first_nonzero(const uint8_t* buf, uint64_t len) {
  for (uint64_t off = 0; off < len; off++) {
    if (buf[off]) return off / kSector * kSector;
  }
  return len;
}

struct Image {
  std::string name;
  Node* node;
  uint64_t size;
};

struct Compare {
  Image a, b;
  bool strict = false;
  bool quiet = false;
  Progress* progress = nullptr;
  std::vector<uint8_t> buf_a = std::vector<uint8_t>(kChunk), buf_b = std::vector<uint8_t>(kChunk);
};

void say(const Compare& c, const std::string& text) {
  if (!c.quiet) std::printf("%s\n", text.c_str());
}

// Reads `len` bytes of `img` at `off` into `buf`; 4 after the message on error.
Task<int> co_read(const Image& img, uint64_t off, uint64_t len, uint8_t* buf) {
  auto r = co_await img.node->co_preadv(off, IoVec(buf, len), 0);
  if (r) co_return 0;
  error_report("Error while reading offset " + std::to_string(off) + " of " + img.name + ": " +
               std::strerror(r.error().code));
  co_return 4;
}

// A range only `img` allocates must read as zeroes (qemu-img's
// check_empty_sectors): 0, 1 with the mismatch printed, or 4.
Task<int> co_check_empty(Compare& c, const Image& img, uint64_t off, uint64_t len) {
  if (int rc = co_await co_read(img, off, len, c.buf_a.data()); rc) co_return rc;
  uint64_t at = first_nonzero(c.buf_a.data(), len);
  if (at == len) co_return 0;
  say(c, "Content mismatch at offset " + std::to_string(off + at) + "!");
  co_return 1;
}

Task<int> co_compare_ranges(Compare& c, uint64_t off, uint64_t* chunk, const BlockStatus& sa,
                            const BlockStatus& sb) {
  bool alloc_a = sa.flags & kStatusAllocated, alloc_b = sb.flags & kStatusAllocated;
  if ((sa.flags & kStatusZero) && (sb.flags & kStatusZero)) co_return 0;
  *chunk = std::min(*chunk, kChunk);
  if (alloc_a != alloc_b) co_return co_await co_check_empty(c, alloc_a ? c.a : c.b, off, *chunk);
  if (!alloc_a) co_return 0;
  if (int rc = co_await co_read(c.a, off, *chunk, c.buf_a.data()); rc) co_return rc;
  if (int rc = co_await co_read(c.b, off, *chunk, c.buf_b.data()); rc) co_return rc;
  uint64_t at = first_difference(c.buf_a.data(), c.buf_b.data(), *chunk);
  if (at == *chunk) co_return 0;
  say(c, "Content mismatch at offset " + std::to_string(off + at) + "!");
  co_return 1;
}

Task<Result<BlockStatus>> co_status(const Image& img, uint64_t off) {
  return co_status_above(img.node, off, img.size - off);
}

// The range both images have; 0 when it compares equal.
Task<int> co_compare_common(Compare& c, uint64_t* offset, float base) {
  uint64_t total = std::min(c.a.size, c.b.size);
  for (uint64_t& off = *offset; off < total;) {
    auto sa = co_await co_status(c.a, off);
    if (!sa) {
      error_report("Sector allocation test failed for " + c.a.name);
      co_return 3;
    }
    auto sb = co_await co_status(c.b, off);
    if (!sb) {
      error_report("Sector allocation test failed for " + c.b.name);
      co_return 3;
    }
    uint64_t chunk = std::min(sa->bytes, sb->bytes);
    if (c.strict && (sa->flags & kCompared) != (sb->flags & kCompared)) {
      say(c, "Strict mode: Offset " + std::to_string(off) + " block status mismatch!");
      co_return 1;
    }
    if (int rc = co_await co_compare_ranges(c, off, &chunk, *sa, *sb); rc) co_return rc;
    off += chunk;
    c.progress->advance(float(chunk) / base * 100);
  }
  co_return 0;
}

// The tail of the longer image must read as zeroes.
Task<int> co_compare_tail(Compare& c, uint64_t off, float base) {
  const Image& over = c.a.size > c.b.size ? c.a : c.b;
  while (off < over.size) {
    auto st = co_await co_status(over, off);
    if (!st) {
      error_report("Sector allocation test failed for " + over.name);
      co_return 3;
    }
    uint64_t chunk = st->bytes;
    if ((st->flags & kStatusAllocated) && !(st->flags & kStatusZero)) {
      chunk = std::min(chunk, kChunk);
      if (int rc = co_await co_check_empty(c, over, off, chunk); rc) co_return rc;
    }
    off += chunk;
    c.progress->advance(float(chunk) / base * 100);
  }
  co_return 0;
}

Task<int> co_compare_open(Compare& c) {
  float base = float(std::max(c.a.size, c.b.size));
  c.progress->update(0);
  if (c.strict && c.a.size != c.b.size) {
    say(c, "Strict mode: Image size mismatch!");
    co_return 1;
  }
  uint64_t offset = 0;
  if (int rc = co_await co_compare_common(c, &offset, base); rc) co_return rc;
  if (c.a.size != c.b.size) {
    say(c, "Warning: Image size mismatch!");
    if (int rc = co_await co_compare_tail(c, offset, base); rc) co_return rc;
  }
  say(c, "Images are identical.");
  co_return 0;
}

Task<int> co_compare(Engine& engine, OpenSpec s1, OpenSpec s2, bool strict, bool quiet, bool prog) {
  Progress progress(prog && !quiet, 2.0f);
  auto d1 = co_await co_open_image(engine, s1);
  if (!d1) {
    error_report(d1.error().message);
    progress.finish();
    co_return 2;
  }
  auto d2 = co_await co_open_image(engine, s2);
  if (!d2) {
    error_report(d2.error().message);
    co_await (*d1)->co_close();
    progress.finish();
    co_return 2;
  }
  Compare c;
  c.a = {s1.filename, (*d1)->edge()->node(), (*d1)->size()};
  c.b = {s2.filename, (*d2)->edge()->node(), (*d2)->size()};
  c.strict = strict;
  c.quiet = quiet;
  c.progress = &progress;
  int rc = co_await co_compare_open(c);
  co_await (*d2)->co_close();
  co_await (*d1)->co_close();
  progress.finish();
  co_return rc;
}

}  // namespace

int cmd_compare(Engine& engine, const Args& args) {
  auto longopts = long_options(kLongImageOpts | kLongObject | kLongForceShare, {});
  OptionParser p(args, "hf:F:T:pqsU", longopts.data());
  // -f, -q, -U and --image-opts land in `common`; -F names the second
  // image's format and -T the cache mode of both.
  CommonOptions common;
  std::string format2, cache;
  bool strict = false, prog = false;
  for (int c; (c = p.next()) != -1;) {
    OptionUse use = handle_common_option(c, p.arg, &common);
    if (use == OptionUse::kError) return 1;
    if (use == OptionUse::kHandled) continue;
    switch (c) {
      case 'F':
        format2 = p.arg;
        break;
      case 'T':
        cache = p.arg;
        break;
      case 'p':
        prog = true;
        break;
      case 's':
        strict = true;
        break;
      case 'h':
        std::printf(
            "Usage: strata-img compare [-f fmt] [-F fmt] [-p] [-q] [-s] filename1 filename2\n");
        return 0;
      default:
        return 1;
    }
  }
  if (p.rest.size() != 2) return usage_error("Expecting two image file names");
  OpenSpec s1 = common.spec, s2 = common.spec;
  s1.filename = p.rest[0];
  s2.filename = p.rest[1];
  s2.format = format2;
  s1.cache = s2.cache = cache;
  return engine.run(co_compare(engine, s1, s2, strict, common.quiet, prog));
}

}  // namespace strata::img
