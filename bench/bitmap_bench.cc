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

// Overhead of 1 and 8 recording bitmaps on random 4 KiB writes. One node
// carries 8 bitmaps; each round runs `writes` writes with 0, 1 and 8 of them
// enabled, in turn, on the same node (so memory layout and caches are the
// same for the three; the order rotates), and the overhead is the median over rounds of the
// per-round ratio to the 0-bitmap run: pairing the runs of one round keeps
// the load of other processes, which drifts over seconds, out of the ratio.
// null-co uses the loop thread's CPU time, file the wall time.

double wall_seconds() {
  return Loop::now_ns() / 1e9;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void enable_first(const std::vector<strata::DirtyBitmap*>& bitmaps, size_t count) {
  for (size_t b = 0; b < bitmaps.size(); b++) bitmaps[b]->set_enabled(b < count);
}

void bench_writes(const char* label, const nlohmann::json& options, int writes,
                  uint64_t granularity, int rounds, bool cpu_time) {
  const size_t kCounts[] = {0, 1, 8};
  Engine engine;
  auto drive = engine.run(Drive::co_open(engine, options));
  if (!drive) {
    std::fprintf(stderr, "%s\n", drive.error().message.c_str());
    std::exit(1);
  }
  strata::Node* node = engine.graph().find((*drive)->node_name());
  std::vector<strata::DirtyBitmap*> bitmaps;
  for (int b = 0; b < 8; b++) {
    auto bitmap = node->bitmaps().create(granularity, "b" + std::to_string(b));
    if (!bitmap) std::exit(1);
    bitmaps.push_back(*bitmap);
  }
  std::vector<double> times[3], ratios[3];
  bool failed = false;
  for (int round = 0; round < rounds; round++) {
    // Rotate the order so that no configuration always runs first.
    for (int k = 0; k < 3; k++) {
      int i = (round + k) % 3;
      enable_first(bitmaps, kCounts[i]);
      strata::TaskGroup group(engine.loop());
      double t0 = cpu_time ? thread_cpu_seconds() : wall_seconds();
      for (int q = 0; q < kInFlight; q++) {
        group.spawn(co_writer(**drive, round * 1000 + q, writes / kInFlight, &failed));
      }
      engine.run(group.co_join());
      times[i].push_back((cpu_time ? thread_cpu_seconds() : wall_seconds()) - t0);
    }
    for (int i = 0; i < 3; i++) ratios[i].push_back(times[i].back() / times[0].back());
  }
  if (failed) std::exit(1);
  for (int i = 0; i < 3; i++) {
    std::printf("%-8s %6llu B granules, %zu bitmaps: %9.0f writes/s (%s)  overhead %+.2f%%\n",
                label, static_cast<unsigned long long>(granularity), kCounts[i],
                writes / median(times[i]), cpu_time ? "loop CPU" : "wall",
                (median(ratios[i]) - 1) * 100);
  }
  (*drive)->close();
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

// `bitmap_bench --only-writes BITMAPS WRITES`: WRITES random 4 KiB writes
// to a null-co node with BITMAPS recording bitmaps at 64 KiB granularity,
// nothing else (bench/bitmap_instructions.sh counts their instructions).
int only_writes(int nbitmaps, int writes) {
  Engine engine;
  auto drive = engine.run(Drive::co_open(engine, {{"driver", "null-co"}, {"size", kDiskSize}}));
  if (!drive) return 1;
  strata::Node* node = engine.graph().find((*drive)->node_name());
  for (int b = 0; b < nbitmaps; b++) {
    if (!node->bitmaps().create(65536, "b" + std::to_string(b))) return 1;
  }
  bool failed = false;
  strata::TaskGroup group(engine.loop());
  for (int q = 0; q < kInFlight; q++) {
    group.spawn(co_writer(**drive, q, writes / kInFlight, &failed));
  }
  engine.run(group.co_join());
  (*drive)->close();
  return failed ? 1 : 0;
}

int main(int argc, char** argv) {
  if (argc == 4 && std::string(argv[1]) == "--only-writes") {
    return only_writes(std::atoi(argv[2]), std::atoi(argv[3]));
  }
  int writes = argc > 1 ? std::atoi(argv[1]) : 64000;
  bench_mark_cost(65536);
  bench_mark_cost(512);
  bench_extents(9);
  bench_extents(16);
  nlohmann::json null_co = {{"driver", "null-co"}, {"size", kDiskSize}};
  bench_writes("null-co", null_co, writes, 65536, 31, true);
  bench_writes("null-co", null_co, writes, 512, 31, true);
  auto path = std::filesystem::temp_directory_path() / "strata_bitmap_bench.img";
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (!f || ftruncate(fileno(f), kDiskSize) != 0) return 1;
  std::fclose(f);
  bench_writes("file", {{"driver", "file"}, {"filename", path.string()}}, writes / 32, 65536, 15,
               false);
  std::filesystem::remove(path);
  return 0;
}
