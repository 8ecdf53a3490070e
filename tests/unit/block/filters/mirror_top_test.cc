// mirror_top forwards to its child and hands every write to its job after
// the child took it: to copy to the target (write-blocking) or to note;
// internal only.
#include "block/filters/mirror_top.h"

#include <gtest/gtest.h>

#include "strata/drive.h"
#include "unit/block/core/mem_driver.h"

namespace strata {
namespace {

using testing::MemState;

class FakeSink final : public MirrorSink {
 public:
  explicit FakeSink(MemState* child) : child_(child) {}
  bool copy_to_target() const override { return active; }
  Task<ActiveWrite> co_begin_active_write(uint64_t offset, uint64_t bytes) override {
    log.push_back("begin " + std::to_string(offset) + "+" + std::to_string(bytes));
    co_return ActiveWrite{};
  }
  Task<void> co_active_write(ActiveWrite&, MirrorMethod method, uint64_t offset, uint64_t bytes,
                             const IoVec* iov, uint32_t) override {
    // The source has the data already when the target's turn comes.
    source_had_it = child_->data[offset] == 0x5A || method != MirrorMethod::kCopy;
    log.push_back(std::string(method == MirrorMethod::kCopy   ? "copy "
                              : method == MirrorMethod::kZero ? "zero "
                                                              : "discard ") +
                  std::to_string(offset) + "+" + std::to_string(bytes));
    co_return;
  }
  void note_source_write(uint64_t offset, uint64_t bytes) override {
    log.push_back("noted " + std::to_string(offset) + "+" + std::to_string(bytes));
  }
  bool active = true;
  bool source_had_it = false;
  std::vector<std::string> log;

 private:
  MemState* child_;
};

class MirrorTopTest : public ::testing::Test {
 protected:
  void SetUp() override {
    mem_.data.assign(1 << 20, 0);
    testing::register_mem_driver(engine_, &mem_);
    ASSERT_TRUE(engine_.run(
        engine_.graph().co_add({{"driver", "mem"}, {"node-name", "src"}, {"discard", "unmap"}})));
  }
  void TearDown() override { engine_.run(engine_.co_close_all()); }

  Engine engine_;
  MemState mem_;
};

TEST_F(MirrorTopTest, BlockdevAddRefusesTheDriver) {
  auto n = engine_.run(
      engine_.graph().co_add({{"driver", "mirror_top"}, {"node-name", "m"}, {"file", "src"}}));
  ASSERT_FALSE(n);
  EXPECT_EQ(n.error().message, "Parameter 'driver' does not accept value 'mirror_top'");
}

TEST_F(MirrorTopTest, WritesReachTheSourceThenTheJob) {
  auto f = engine_.run(engine_.graph().co_add_internal(
      {{"driver", "mirror_top"}, {"file", "src"}, {"discard", "unmap"}}));
  ASSERT_TRUE(f) << f.error().message;
  EXPECT_TRUE((*f)->implicit());
  auto* driver = static_cast<MirrorTopDriver*>(&(*f)->driver());
  FakeSink sink(&mem_);
  driver->set_sink(&sink);
  auto d = Drive::attach(engine_, (*f)->name(), {.writable = true});
  ASSERT_TRUE(d) << d.error().message;
  std::vector<uint8_t> buf(4096, 0x5A);
  ASSERT_TRUE((*d)->write(8192, buf));
  EXPECT_TRUE(sink.source_had_it);
  ASSERT_TRUE((*d)->write_zeroes(0, 512));
  ASSERT_TRUE((*d)->discard(65536, 65536));
  EXPECT_EQ(sink.log,
            (std::vector<std::string>{"begin 8192+4096", "copy 8192+4096", "begin 0+512",
                                      "zero 0+512", "begin 65536+65536", "discard 65536+65536"}));
  sink.log.clear();
  sink.active = false;  // not write-blocking: the job is told once the source has it
  ASSERT_TRUE((*d)->write(0, buf));
  ASSERT_TRUE((*d)->discard(65536, 4096));
  EXPECT_EQ(sink.log, (std::vector<std::string>{"noted 0+4096", "noted 65536+4096"}));
  EXPECT_EQ(mem_.data[0], 0x5A);
  driver->set_sink(nullptr);
  (*d)->close();  // the implicit filter goes with its last user
}

TEST_F(MirrorTopTest, PermissionsFollowTheJob) {
  auto f =
      engine_.run(engine_.graph().co_add_internal({{"driver", "mirror_top"}, {"file", "src"}}));
  ASSERT_TRUE(f);
  auto* driver = static_cast<MirrorTopDriver*>(&(*f)->driver());
  auto d = Drive::attach(engine_, (*f)->name(), {.writable = true});
  ASSERT_TRUE(d);
  Child* edge = (*f)->file();
  EXPECT_TRUE(edge->perm() & kPermWrite);
  EXPECT_TRUE(edge->perm() & kPermConsistentRead);
  driver->set_commit(true);
  ASSERT_TRUE(engine_.graph().refresh_node_perms(**f));
  EXPECT_FALSE(edge->perm() & kPermConsistentRead);
  EXPECT_TRUE(edge->shared() & kPermWrite);
  driver->stop();
  ASSERT_TRUE(engine_.graph().refresh_node_perms(**f));
  EXPECT_EQ(edge->perm(), 0u);
  EXPECT_EQ(edge->shared(), kPermAll);
  (*d)->close();
}

}  // namespace
}  // namespace strata
