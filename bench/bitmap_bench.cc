// Dirty bitmap benchmarks:
//  1. 4 KiB random writes through a node with 0, 1 and 8 recording bitmaps
//     (null-co: the dispatcher alone, the worst case for the relative
//     overhead; file: a real file in the temp directory);
//  2. finding every dirty extent of a 1 TiB bitmap with 1,000 scattered
//     dirty granules;
//  3. memory per bitmap against one bit per granule.
//
//   bitmap_bench [WRITES]
#include <unistd.h>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "base/sync.h"
#include "block/bitmap/dirty_bitmap.h"
#include "block/core/graph.h"
#include "strata/drive.h"
#include "strata/iovec.h"

namespace {

using strata::Drive;
using strata::Engine;
using strata::Loop;

constexpr uint64_t kDiskSize = uint64_t{1} << 30;
constexpr int kInFlight = 32;

double thread_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

strata::Task<void> co_writer(Drive& drive, uint64_t seed, int writes, bool* failed) {
  strata::AlignedBuffer buf(4096);
  std::fill(buf.data(), buf.data() + 4096, uint8_t{0x5A});
  std::mt19937_64 rng(seed);
  for (int i = 0; i < writes && !*failed; i++) {
    uint64_t off = (rng() % (kDiskSize / 4096)) * 4096;
    auto r = co_await drive.co_write(off, buf.span());
    if (!r) {
      std::fprintf(stderr, "write failed: %s\n", r.error().message.c_str());
      *failed = true;
    }
  }
}

// Median over interleaved rounds of the loop thread's CPU seconds for
// `writes` random 4 KiB writes, for nodes with 0, 1 and 8 recording bitmaps.
// Thread CPU time and interleaving keep other processes' load out of the
// comparison.

double wall_seconds() {
  return Loop::now_ns() / 1e9;
}

void bench_writes(const char* label, const nlohmann::json& options, int writes,
                  uint64_t granularity, int rounds, bool cpu_time) {
  const int kCounts[] = {0, 1, 8};
  Engine engine;
  std::vector<std::unique_ptr<Drive>> drives;
  for (int i = 0; i < 3; i++) {
    nlohmann::json o = options;
    o["node-name"] = "n" + std::to_string(i);
    if (o.contains("filename"))
      o["filename"] = o["filename"].get<std::string>() + std::to_string(i);
    auto drive = engine.run(Drive::co_open(engine, o));
    if (!drive) {
      std::fprintf(stderr, "%s\n", drive.error().message.c_str());
      std::exit(1);
    }
    strata::Node* node = engine.graph().find((*drive)->node_name());
    for (int b = 0; b < kCounts[i]; b++) {
      if (!node->bitmaps().create(granularity, "b" + std::to_string(b))) std::exit(1);
    }
    drives.push_back(std::move(*drive));
  }
  std::vector<double> times[3];
  bool failed = false;
  for (int round = 0; round < rounds; round++) {
    for (int i = 0; i < 3; i++) {
      strata::TaskGroup group(engine.loop());
      double t0 = cpu_time ? thread_cpu_seconds() : wall_seconds();
      for (int q = 0; q < kInFlight; q++) {
        group.spawn(co_writer(*drives[i], round * 1000 + q, writes / kInFlight, &failed));
      }
      engine.run(group.co_join());
      times[i].push_back((cpu_time ? thread_cpu_seconds() : wall_seconds()) - t0);
    }
  }
  if (failed) std::exit(1);
  double median[3];
  for (int i = 0; i < 3; i++) {
    std::sort(times[i].begin(), times[i].end());
    median[i] = times[i][times[i].size() / 2];
  }
  for (int i = 0; i < 3; i++) {
    std::printf("%-8s %6llu B granules, %d bitmaps: %9.0f writes/s (%s)  overhead %+.2f%%\n", label,
                static_cast<unsigned long long>(granularity), kCounts[i], writes / median[i],
                cpu_time ? "loop CPU" : "wall", (median[i] / median[0] - 1) * 100);
  }
  for (auto& d : drives) d->close();
}

// The marking itself: ns per after-write hook call (BitmapSet::mark) with
// `nbitmaps` recording bitmaps, against ns per 4 KiB write through the
// dispatcher of a null-co node without bitmaps.
void bench_mark_cost(uint64_t granularity) {
  Engine engine;
  auto drive = engine.run(Drive::co_open(engine, {{"driver", "null-co"}, {"size", kDiskSize}}));
  if (!drive) std::exit(1);
  strata::Node* node = engine.graph().find((*drive)->node_name());
  const int kWrites = 200000;
  bool failed = false;
  double best_write = 1e9;
  for (int rep = 0; rep < 5; rep++) {
    double t0 = thread_cpu_seconds();
    engine.run(co_writer(**drive, 5, kWrites, &failed));
    best_write = std::min(best_write, (thread_cpu_seconds() - t0) / kWrites * 1e9);
  }
  for (int b = 0; b < 8; b++) {
    if (!node->bitmaps().create(granularity, "b" + std::to_string(b))) std::exit(1);
  }
  std::vector<uint64_t> offsets(kWrites);
  std::mt19937_64 rng(5);
  for (auto& o : offsets) o = (rng() % (kDiskSize / 4096)) * 4096;
  double best_mark = 1e9;
  for (int rep = 0; rep < 5; rep++) {
    double t0 = thread_cpu_seconds();
    for (uint64_t o : offsets) node->bitmaps().mark(o, 4096);
    best_mark = std::min(best_mark, (thread_cpu_seconds() - t0) / kWrites * 1e9);
  }
  std::printf("%6llu B granules: write %.0f ns, marking 8 bitmaps %.1f ns (%.2f%% of a write)\n",
              static_cast<unsigned long long>(granularity), best_write, best_mark,
              best_mark / best_write * 100);
  (*drive)->close();
}

void bench_extents(uint32_t granularity_bits) {
  strata::HBitmap bits(uint64_t{1} << 40, granularity_bits);
  std::mt19937_64 rng(7);
  for (int i = 0; i < 1000; i++) bits.set_bits(rng() % bits.bits(), 1);
  const int kRounds = 200;
  uint64_t extents = 0;
  uint64_t t0 = Loop::now_ns();
  for (int r = 0; r < kRounds; r++) {
    bits.for_each_dirty_extent([&](const strata::BitmapExtent&) { extents++; });
  }
  uint64_t t1 = Loop::now_ns();
  double per_scan_us = (t1 - t0) / 1e3 / kRounds;
  std::printf("1 TiB at %6llu B granularity: %llu dirty extents found in %.1f us per scan\n",
              static_cast<unsigned long long>(bits.granularity()),
              static_cast<unsigned long long>(extents / kRounds), per_scan_us);
  double one_bit = static_cast<double>(bits.bits()) / 8;
  std::printf("  memory: %llu bytes, %.4f x one bit per granule\n",
              static_cast<unsigned long long>(bits.memory_bytes()), bits.memory_bytes() / one_bit);
}

}  // namespace

int main(int argc, char** argv) {
  int writes = argc > 1 ? std::atoi(argv[1]) : 64000;
  bench_mark_cost(65536);
  bench_mark_cost(512);
  bench_extents(9);
  bench_extents(16);
  nlohmann::json null_co = {{"driver", "null-co"}, {"size", kDiskSize}};
  bench_writes("null-co", null_co, writes, 65536, 15, true);
  bench_writes("null-co", null_co, writes, 512, 15, true);
  auto base = std::filesystem::temp_directory_path() / "strata_bitmap_bench.img";
  for (int i = 0; i < 3; i++) {
    std::FILE* f = std::fopen((base.string() + std::to_string(i)).c_str(), "w");
    if (!f || ftruncate(fileno(f), kDiskSize) != 0) return 1;
    std::fclose(f);
  }
  bench_writes("file", {{"driver", "file"}, {"filename", base.string()}}, writes / 32, 65536, 9,
               false);
  for (int i = 0; i < 3; i++) std::filesystem::remove(base.string() + std::to_string(i));
  return 0;
}
