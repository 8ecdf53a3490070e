// The stream job through the engine API: data of the streamed layers lands
// in the top layer, what the top allocates is kept, the base's data stays
// in the base, the chain is relinked in the graph and in the header, a
// cancelled job leaves the chain, and a guest write during the job wins.
#include <gtest/gtest.h>

#include "block/core/graph.h"
#include "block/drivers/qcow2/create.h"
#include "jobs/stream.h"
#include "strata/drive.h"
#include "unit/block/drivers/temp_dir.h"
#include "unit/jobs/test_jobs.h"

namespace strata::testing {
namespace {

using nlohmann::json;

constexpr uint64_t kCluster = 65536;
constexpr uint64_t kSize = 8 << 20;

class StreamJobTest : public JobTest {
 protected:
  void create(const std::string& name, const std::string& backing) {
    qcow2::CreateOptions o;
    o.size = kSize;
    if (!backing.empty()) {
      o.backing_file = dir_.file(backing);
      o.backing_format = "qcow2";
    }
    auto r = run(qcow2::co_create_image(engine_, dir_.file(name), o));
    ASSERT_TRUE(r) << r.error().message;
  }
  void fill(const std::string& name, uint64_t off, uint64_t len, uint8_t byte) {
    json opts = {{"driver", "qcow2"},
                 {"backing", nullptr},
                 {"file", {{"driver", "file"}, {"filename", dir_.file(name)}}}};
    auto d = run(Drive::co_open(engine_, opts));
    ASSERT_TRUE(d) << d.error().message;
    std::vector<uint8_t> buf(len, byte);
    ASSERT_TRUE((*d)->write(off, buf));
    (*d)->close();
  }
  // base: 0x11 over 0..1M; mid: 0x22 over 512k..2M; top: 0x33 over 1M..1M+64k.
  void make_chain() {
    create("base.qcow2", "");
    create("mid.qcow2", "base.qcow2");
    create("top.qcow2", "mid.qcow2");
    fill("base.qcow2", 0, 1 << 20, 0x11);
    fill("mid.qcow2", 512 << 10, 1536 << 10, 0x22);
    fill("top.qcow2", 1 << 20, kCluster, 0x33);
    Node* below = nullptr;
    for (const char* name : {"base", "mid", "top"}) {
      json o = {
          {"driver", "qcow2"},
          {"node-name", name},
          {"file", {{"driver", "file"}, {"filename", dir_.file(std::string(name) + ".qcow2")}}},
          {"read-only", std::string(name) != "top"}};
      o["backing"] = below ? json(below->name()) : json(nullptr);
      auto n = run(engine_.graph().co_add(o));
      ASSERT_TRUE(n) << n.error().message;
      below = *n;
    }
    auto d = Drive::attach(engine_, "top", {.writable = true});
    ASSERT_TRUE(d) << d.error().message;
    guest_ = std::move(*d);
  }
  Node* node(const char* name) { return engine_.graph().find(name); }
  std::shared_ptr<StreamJob> start_stream(Node* base, int64_t speed = 0) {
    StreamParams p;
    p.job = {.id = "s"};
    p.bs = node("top");
    p.base = base;
    p.speed = speed;
    auto job = run(StreamJob::co_start(engine_, std::move(p)));
    EXPECT_TRUE(job) << job.error().message;
    return job ? *job : nullptr;
  }
  std::vector<uint8_t> read(uint64_t off, uint64_t len) {
    std::vector<uint8_t> buf(len, 0xee);
    EXPECT_TRUE(guest_->read(off, buf));
    return buf;
  }
  // Every byte of the range, in as many extents as the image reports
  // (chunks copied in parallel allocate clusters in any order).
  bool top_allocates(uint64_t off, uint64_t len) {
    for (uint64_t end = off + len; off < end;) {
      auto st = run(node("top")->co_block_status(off, end - off, nullptr));
      if (!st || !(st->flags & kStatusAllocated) || st->bytes == 0) return false;
      off += st->bytes;
    }
    return true;
  }

  TempDir dir_;
  std::unique_ptr<Drive> guest_;
};

TEST_F(StreamJobTest, StreamsTheMiddleLayerAndKeepsTheBase) {
  make_chain();
  auto before = read(0, 4 << 20);
  auto job = start_stream(node("base"));
  ASSERT_TRUE(job);
  wait_status(*job, JobStatus::kNull);
  EXPECT_EQ(log_.events().back(), "s:null");
  Node* top = node("top");
  ASSERT_TRUE(top->backing());
  EXPECT_EQ(top->backing()->node()->name(), "base");
  EXPECT_TRUE(top_allocates(1536 << 10, 512 << 10));  // mid's data, copied
  EXPECT_FALSE(top_allocates(0, kCluster));           // base's alone stays there
  EXPECT_EQ(read(0, 4 << 20), before);
  // The filter is gone: the guest's edge points at top again.
  EXPECT_EQ(guest_->edge()->node(), top);
}

TEST_F(StreamJobTest, StreamingTheWholeChainLeavesNoBackingFile) {
  make_chain();
  auto before = read(0, 4 << 20);
  auto job = start_stream(nullptr);
  ASSERT_TRUE(job);
  wait_status(*job, JobStatus::kNull);
  EXPECT_EQ(node("top")->backing(), nullptr);
  EXPECT_TRUE(top_allocates(0, kCluster));
  EXPECT_EQ(read(0, 4 << 20), before);
  // mid and base were opened by the user: they stay, out of the chain.
  EXPECT_NE(node("mid"), nullptr);
  EXPECT_NE(node("base"), nullptr);
}

TEST_F(StreamJobTest, AGuestWriteDuringTheJobWins) {
  make_chain();
  auto job = start_stream(nullptr, 256 << 10);  // slow: the write lands mid-way
  ASSERT_TRUE(job);
  run_until([&] { return job->progress_current() > 0; });
  std::vector<uint8_t> mine(kCluster, 0x77);
  ASSERT_TRUE(guest_->write(600 << 10, mine));
  ASSERT_TRUE(job->set_speed(0));
  wait_status(*job, JobStatus::kNull);
  EXPECT_EQ(read(600 << 10, kCluster), mine);
  auto head = read(512 << 10, 88 << 10);
  EXPECT_EQ(head, std::vector<uint8_t>(88 << 10, 0x22));
}

TEST_F(StreamJobTest, CancelLeavesTheChainAndDropsTheFilter) {
  make_chain();
  auto before = read(0, 4 << 20);
  auto job = start_stream(node("base"), 64 << 10);
  ASSERT_TRUE(job);
  run_until([&] { return job->progress_current() > 0; });
  ASSERT_TRUE(run(job->co_user_cancel(true)));
  wait_status(*job, JobStatus::kNull);
  EXPECT_EQ(node("top")->backing()->node()->name(), "mid");
  EXPECT_EQ(guest_->edge()->node(), node("top"));
  EXPECT_EQ(read(0, 4 << 20), before);
}

TEST_F(StreamJobTest, RefusesABaseOutsideTheChain) {
  make_chain();
  StreamParams p;
  p.job = {.id = "s"};
  p.bs = node("mid");
  p.base = node("top");
  auto job = run(StreamJob::co_start(engine_, std::move(p)));
  ASSERT_FALSE(job);
  EXPECT_EQ(job.error().message, "'top' is not in the backing chain of 'mid'");
  EXPECT_TRUE(engine_.jobs().list().empty());
}

}  // namespace
}  // namespace strata::testing
