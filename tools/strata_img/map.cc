// strata-img map [-f FMT] [--output=human|json] [--start-offset=OFF] [--max-length=LEN] [-U] FILE
#include <cinttypes>
#include <cstdio>

#include "strata_img/common.h"

namespace strata::img {

namespace {

struct MapEntry {
  ChainStatus st;
  uint64_t start = 0;
  uint64_t length = 0;
  std::string filename;
};

bool mergeable(const MapEntry& a, const MapEntry& b) {
  if (a.length == 0) return false;
  if (a.st.zero != b.st.zero || a.st.data != b.st.data || a.st.depth != b.st.depth ||
      a.st.present != b.st.present || a.filename != b.filename ||
      a.st.has_offset != b.st.has_offset) {
    return false;
  }
  return !a.st.has_offset || a.st.offset + a.length == b.st.offset;
}

bool dump(const MapEntry& e, bool json, bool first) {
  if (json) {
    std::printf("%s{ \"start\": %" PRIu64 ", \"length\": %" PRIu64
                ", \"depth\": %d, \"present\": %s,"
                " \"zero\": %s, \"data\": %s",
                first ? "" : ",\n", e.start, e.length, e.st.depth, e.st.present ? "true" : "false",
                e.st.zero ? "true" : "false", e.st.data ? "true" : "false");
    if (e.st.has_offset) std::printf(", \"offset\": %" PRIu64, e.st.offset);
    std::printf("}");
    return true;
  }
  if (e.st.data && !e.st.has_offset) {
    error_report("File contains external, encrypted or compressed clusters.");
    return false;
  }
  if (e.st.data && !e.st.zero) {
    std::printf("%#-16" PRIx64 "%#-16" PRIx64 "%#-16" PRIx64 "%s\n", e.start, e.length,
                e.st.has_offset ? e.st.offset : 0, e.filename.c_str());
  }
  return true;
}

Task<int> co_map(Engine& engine, OpenSpec spec, bool json, uint64_t start, uint64_t max_len) {
  auto drive = co_await co_open_image(engine, spec);
  if (!drive) {
    error_report(drive.error().message);
    co_return 1;
  }
  Node* top = (*drive)->edge()->node();
  uint64_t end = std::min(top->size(), max_len == UINT64_MAX ? UINT64_MAX : start + max_len);
  if (json) {
    std::printf("[");
  } else {
    std::printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
  }
  MapEntry cur;
  bool have = false, first = true, ok = true;
  for (uint64_t off = start; off < end && ok;) {
    uint64_t len = std::min<uint64_t>(end - off, 1ull << 30);
    auto st = co_await co_chain_status(top, off, len);
    if (!st) {
      error_report("Could not read image metadata: " + st.error().message);
      ok = false;
      break;
    }
    MapEntry next{*st, off, st->bytes,
                  st->map_node && st->has_offset ? node_filename(st->map_node) : ""};
    off += st->bytes;
    if (have && mergeable(cur, next)) {
      cur.length += next.length;
      continue;
    }
    if (have) {
      ok = dump(cur, json, first);
      first = false;
    }
    cur = next;
    have = true;
  }
  if (ok && !have) cur.start = start;  // qemu-img's empty entry past the end
  if (ok) ok = dump(cur, json, first);
  if (json) std::printf("]\n");
  co_await (*drive)->co_close();
  co_return ok ? 0 : 1;
}

}  // namespace

int cmd_map(Engine& engine, const Args& args) {
  enum { kStart = kOptFirstOwn, kMaxLen };
  auto longopts =
      long_options(kLongFormat | kLongOutput | kLongImageOpts | kLongObject | kLongForceShare,
                   {{"start-offset", required_argument, nullptr, kStart},
                    {"max-length", required_argument, nullptr, kMaxLen}});
  OptionParser p(args, "f:hU", longopts.data());
  CommonOptions common;
  uint64_t start = 0, max_len = UINT64_MAX;
  for (int c; (c = p.next()) != -1;) {
    OptionUse use = handle_common_option(c, p.arg, &common);
    if (use == OptionUse::kError) return 1;
    if (use == OptionUse::kHandled) continue;
    switch (c) {
      case kStart:
        if (!cvtnum("start offset", p.arg, &start)) return 1;
        break;
      case kMaxLen:
        if (!cvtnum("max length", p.arg, &max_len)) return 1;
        break;
      case 'h':
        std::printf("Usage: strata-img map [-f fmt] [--output=ofmt] filename\n");
        return 0;
      default:
        return 1;
    }
  }
  if (p.rest.size() != 1) {
    return usage_error("Expecting one image file name");
  }
  common.spec.filename = p.rest[0];
  return engine.run(co_map(engine, common.spec, common.json, start, max_len));
}

}  // namespace strata::img
