// Sequential read of a whole file through the `file` driver with a fixed
// number of requests in flight; prints MiB/s on stdout.
//
//   file_read_bench FILE IN_FLIGHT [BLOCK_SIZE_BYTES]
#include <cstdio>
#include <cstdlib>
#include <string>

#include "base/sync.h"
#include "strata/drive.h"
#include "strata/iovec.h"

namespace {

struct Cursor {
  uint64_t next = 0;
  uint64_t size = 0;
  uint64_t block = 0;
  bool failed = false;
};

strata::Task<void> co_reader(strata::Drive& drive, Cursor& cursor) {
  strata::AlignedBuffer buf(cursor.block);
  while (cursor.next < cursor.size && !cursor.failed) {
    uint64_t off = cursor.next;
    uint64_t len = std::min(cursor.block, cursor.size - off);
    cursor.next += len;
    auto r = co_await drive.co_read(off, buf.span().subspan(0, len));
    if (!r) {
      std::fprintf(stderr, "read failed: %s\n", r.error().message.c_str());
      cursor.failed = true;
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s FILE IN_FLIGHT [BLOCK_SIZE]\n", argv[0]);
    return 2;
  }
  int depth = std::atoi(argv[2]);
  uint64_t block = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : (1 << 20);
  strata::Engine engine;
  auto drive = engine.run(strata::Drive::co_open(
      engine, {{"driver", "file"}, {"filename", argv[1]}, {"read-only", true}},
      {.writable = false, .share_rw = true, .user = "bench"}));
  if (!drive) {
    std::fprintf(stderr, "%s\n", drive.error().message.c_str());
    return 1;
  }
  Cursor cursor{0, (*drive)->size(), block, false};
  strata::TaskGroup group(engine.loop());
  uint64_t t0 = strata::Loop::now_ns();
  for (int i = 0; i < depth; i++) group.spawn(co_reader(**drive, cursor));
  engine.run(group.co_join());
  uint64_t t1 = strata::Loop::now_ns();
  (*drive)->close();
  if (cursor.failed) return 1;
  double mib_s = static_cast<double>(cursor.size) / (1 << 20) / ((t1 - t0) / 1e9);
  std::printf("%.1f\n", mib_s);
  return 0;
}
