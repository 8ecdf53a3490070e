// qcow2_write_bench IMAGE COUNT DEPTH STEP [SIZE]: the same workload as
// `qemu-img bench -w -c COUNT -d DEPTH -s SIZE -S STEP -f qcow2 IMAGE`
// (SIZE-byte writes at offsets i * STEP modulo the image size, DEPTH in
// flight) through Strata's qcow2 driver; prints the elapsed seconds.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "base/sync.h"
#include "strata/drive.h"
#include "strata/engine.h"

using namespace strata;

namespace {

struct Run {
  Drive* drive;
  uint64_t count, step, size, next = 0, offset = 0;
  bool failed = false;
};

Task<void> co_writer(Run* r) {
  std::vector<uint8_t> buf(r->size, 0xa5);
  uint64_t disk = r->drive->size();
  while (r->next < r->count && !r->failed) {
    r->next++;
    uint64_t off = r->offset;
    r->offset = (r->offset + r->step) % disk;
    if (off + r->size > disk) off = 0;
    auto written = co_await r->drive->co_write(off, buf);
    if (!written) r->failed = true;
  }
}

Task<int> co_main(Engine& engine, const char* image, Run run, unsigned depth) {
  nlohmann::json opts = {{"driver", "qcow2"}, {"file", {{"driver", "file"}, {"filename", image}}}};
  DriveOptions dopts;
  auto drive = co_await Drive::co_open(engine, opts, dopts);
  if (!drive) {
    std::fprintf(stderr, "open: %s\n", drive.error().message.c_str());
    co_return 1;
  }
  run.drive = drive->get();
  auto t0 = std::chrono::steady_clock::now();
  TaskGroup group(engine.loop());
  for (unsigned i = 0; i < depth; i++) group.spawn(co_writer(&run));
  co_await group.co_join();
  auto flushed = co_await (*drive)->co_flush();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  co_await (*drive)->co_close();
  co_await engine.co_close_all();
  if (run.failed || !flushed) co_return 1;
  std::printf("%.3f\n", secs);
  co_return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: qcow2_write_bench IMAGE COUNT DEPTH STEP [SIZE]\n");
    return 2;
  }
  Run run{};
  run.count = std::strtoull(argv[2], nullptr, 0);
  unsigned depth = unsigned(std::strtoul(argv[3], nullptr, 0));
  run.step = std::strtoull(argv[4], nullptr, 0);
  run.size = argc > 5 ? std::strtoull(argv[5], nullptr, 0) : 4096;
  Engine engine;
  return engine.run(co_main(engine, argv[1], run, depth));
}
