// strata-img compare [-f FMT] [-F FMT] [-T CACHE] [-p] [-q] [-s] [-U] FILE1 FILE2
// Exit status as qemu-img: 0 identical, 1 different, 2 error.
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "strata_img/common.h"

namespace strata::img {

namespace {

constexpr uint64_t kChunk = 2 << 20;
constexpr uint64_t kSector = 512;

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

struct Pair {
  Node* a;
  Node* b;
};

// Compares the common part; returns the mismatch offset or UINT64_MAX.
Task<Result<uint64_t>> co_compare_common(Pair p, uint64_t size, Progress* progress,
                                         uint64_t total) {
  std::vector<uint8_t> ba(kChunk), bb(kChunk);
  for (uint64_t off = 0; off < size;) {
    uint64_t len = std::min(kChunk, size - off);
    STRATA_CO_TRY_ASSIGN(ChainStatus sa, co_await co_chain_status(p.a, off, len));
    STRATA_CO_TRY_ASSIGN(ChainStatus sb, co_await co_chain_status(p.b, off, sa.bytes));
    len = sb.bytes;
    if (!(sa.zero && sb.zero)) {
      STRATA_CO_TRY(co_await p.a->co_preadv(off, IoVec(ba.data(), len), 0));
      STRATA_CO_TRY(co_await p.b->co_preadv(off, IoVec(bb.data(), len), 0));
      uint64_t d = first_difference(ba.data(), bb.data(), len);
      if (d < len) co_return off + d;
    }
    off += len;
    progress->update(double(off) * 100.0 / double(total));
  }
  co_return UINT64_MAX;
}

Task<Result<uint64_t>> co_check_zero_tail(Node* n, uint64_t from, uint64_t to) {
  std::vector<uint8_t> buf(kChunk);
  for (uint64_t off = from; off < to;) {
    uint64_t len = std::min(kChunk, to - off);
    STRATA_CO_TRY_ASSIGN(ChainStatus st, co_await co_chain_status(n, off, len));
    len = st.bytes;
    if (!st.zero) {
      STRATA_CO_TRY(co_await n->co_preadv(off, IoVec(buf.data(), len), 0));
      uint64_t d = first_nonzero(buf.data(), len);
      if (d < len) co_return off + d;
    }
    off += len;
  }
  co_return UINT64_MAX;
}

Task<int> co_compare(Engine& engine, OpenSpec s1, OpenSpec s2, bool strict, bool quiet, bool prog) {
  auto d1 = co_await co_open_image(engine, s1);
  if (!d1) {
    error_report(d1.error().message);
    co_return 2;
  }
  auto d2 = co_await co_open_image(engine, s2);
  if (!d2) {
    error_report(d2.error().message);
    co_return 2;
  }
  Pair p{(*d1)->edge()->node(), (*d2)->edge()->node()};
  uint64_t size_a = p.a->size(), size_b = p.b->size();
  Progress progress(prog && !quiet);
  int rc = 0;
  auto mismatch =
      co_await co_compare_common(p, std::min(size_a, size_b), &progress, std::max(size_a, size_b));
  if (mismatch && *mismatch == UINT64_MAX && size_a != size_b) {
    if (strict) {
      if (!quiet) std::printf("Strict mode: Image size mismatch!\n");
      rc = 1;
    } else {
      Node* longer = size_a > size_b ? p.a : p.b;
      mismatch =
          co_await co_check_zero_tail(longer, std::min(size_a, size_b), std::max(size_a, size_b));
    }
  }
  progress.finish();
  if (!mismatch) {
    error_report("Error while reading: " + mismatch.error().message);
    rc = 2;
  } else if (rc == 0 && *mismatch != UINT64_MAX) {
    if (!quiet) std::printf("Content mismatch at offset %" PRIu64 "!\n", *mismatch);
    rc = 1;
  } else if (rc == 0 && !quiet) {
    std::printf("Images are identical.\n");
  }
  co_await (*d1)->co_close();
  co_await (*d2)->co_close();
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
    if (use == OptionUse::kError) return 2;
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
        return 2;
    }
  }
  if (p.rest.size() != 2) {
    error_report("Expecting two image file names");
    return 2;
  }
  OpenSpec s1 = common.spec, s2 = common.spec;
  s1.filename = p.rest[0];
  s2.filename = p.rest[1];
  s2.format = format2;
  s1.cache = s2.cache = cache;
  return engine.run(co_compare(engine, s1, s2, strict, common.quiet, prog));
}

}  // namespace strata::img
