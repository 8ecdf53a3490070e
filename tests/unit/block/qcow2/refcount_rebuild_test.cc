// Layout of a rebuilt refcount structure (plan_refcount_structure): for
// random counts, every width and small clusters, the new structure is
// self-consistent and lies entirely at or after the first free cluster.
#include <gtest/gtest.h>

#include <random>
#include <set>

#include "block/drivers/qcow2/format.h"
#include "block/drivers/qcow2/refcount_rebuild.h"

namespace strata::qcow2 {
namespace {

constexpr uint32_t kClusterBits = 9;  // 512-byte clusters: many blocks
constexpr uint64_t kClusterSize = uint64_t(1) << kClusterBits;

void expect_consistent(const std::vector<uint64_t>& input, uint32_t order, uint64_t first_free,
                       const RefcountLayout& plan) {
  uint64_t entries = (kClusterSize * 8) >> order;
  uint64_t table_first = plan.where.table_offset >> kClusterBits;
  uint64_t table_end = table_first + plan.where.table_clusters;
  ASSERT_EQ(plan.table.size(), plan.where.table_clusters * kClusterSize / 8);
  ASSERT_GE(table_first, first_free);
  ASSERT_GE(plan.counts.size(), table_end);
  std::set<uint64_t> block_clusters;
  for (uint64_t b : plan.table) {
    if (b == 0) continue;
    ASSERT_TRUE(block_clusters.insert(b >> kClusterBits).second) << "block used twice";
  }
  // The input counts are kept; the new clusters count 1 and lie past first_free.
  for (uint64_t c = 0; c < plan.counts.size(); c++) {
    uint64_t want = c < input.size() ? input[c] : 0;
    bool own = (c >= table_first && c < table_end) || block_clusters.count(c);
    if (own) {
      ASSERT_GE(c, first_free);
      ASSERT_EQ(want, 0u) << c;
      ASSERT_EQ(plan.counts[c], 1u) << c;
    } else {
      ASSERT_EQ(plan.counts[c], want) << c;
    }
    // Every cluster in use is described by a block the table names.
    if (plan.counts[c]) {
      ASSERT_LT(c / entries, plan.table.size()) << c;
      ASSERT_NE(plan.table[c / entries], 0u) << c;
    }
  }
  // Blocks that describe nothing in use are not written.
  for (uint64_t bi = 0; bi < plan.table.size(); bi++) {
    if (!plan.table[bi]) continue;
    bool any = false;
    for (uint64_t c = bi * entries; c < std::min<uint64_t>((bi + 1) * entries, plan.counts.size());
         c++) {
      any |= plan.counts[c] != 0;
    }
    ASSERT_TRUE(any) << bi;
  }
}

TEST(Qcow2RefcountRebuild, RandomLayoutsAreConsistent) {
  std::mt19937_64 rng(42);
  for (int round = 0; round < 200; round++) {
    uint32_t order = uint32_t(rng() % 7);
    uint64_t max = order == 6 ? 1000 : (uint64_t(1) << (1u << order)) - 1;
    std::vector<uint64_t> counts(rng() % 20000);
    uint64_t density = 1 + rng() % 50;
    for (auto& c : counts) c = rng() % density == 0 ? 1 + rng() % max : 0;
    uint64_t first_free = counts.size() + rng() % 3000;
    auto plan = plan_refcount_structure(counts, kClusterBits, order, first_free);
    ASSERT_TRUE(plan.ok()) << plan.error().message;
    expect_consistent(counts, order, first_free, *plan);
  }
}

TEST(Qcow2RefcountRebuild, NewClustersCrossingABlockBoundary) {
  // 1-bit entries, 512-byte clusters: a block covers 4096 clusters. The new
  // structure starts just before a boundary, so it needs a block of its own.
  for (uint64_t first_free = 4090; first_free <= 4096; first_free++) {
    std::vector<uint64_t> counts(first_free, 1);
    auto plan = plan_refcount_structure(counts, kClusterBits, 0, first_free);
    ASSERT_TRUE(plan.ok());
    expect_consistent(counts, 0, first_free, *plan);
    // One block and one table cluster fit below 4096 up to first_free 4094.
    bool crosses = first_free >= 4095;
    ASSERT_EQ(plan->table.size() > 1 && plan->table[1] != 0, crosses) << first_free;
  }
}

TEST(Qcow2RefcountRebuild, CountsThatDoNotFitAreRefused) {
  std::vector<uint64_t> counts = {1, 1, 2};
  auto plan = plan_refcount_structure(counts, kClusterBits, 0, 3);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.error().code, ERANGE);
  EXPECT_TRUE(plan_refcount_structure(counts, kClusterBits, 1, 3).ok());
}

TEST(Qcow2RefcountRebuild, EmptyImage) {
  auto plan = plan_refcount_structure({}, kClusterBits, 4, 1);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->where.table_clusters, 1u);
  expect_consistent({}, 4, 1, *plan);
}

}  // namespace
}  // namespace strata::qcow2
