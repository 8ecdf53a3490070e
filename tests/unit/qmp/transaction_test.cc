// Transactions: prepare/commit/abort/clean order, rollback of real graph
// changes when the last action fails.
#include "qmp/transaction.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "block/core/graph.h"
#include "block/drivers/qcow2/create.h"
#include "qmp/context.h"
#include "qmp/dispatcher.h"

namespace strata::qmp {
namespace {

struct Log {
  std::vector<std::string> calls;
};

class Recorder final : public Action {
 public:
  Recorder(Log* log, std::string name, bool fail)
      : log_(log), name_(std::move(name)), fail_(fail) {}
  Task<Result<void>> co_prepare() override {
    log_->calls.push_back("prepare " + name_);
    if (fail_) co_return Error{EINVAL, name_ + " failed"};
    co_return Result<void>{};
  }
  Task<void> co_commit() override {
    log_->calls.push_back("commit " + name_);
    co_return;
  }
  Task<void> co_abort() override {
    log_->calls.push_back("abort " + name_);
    co_return;
  }
  Task<void> co_clean() override {
    log_->calls.push_back("clean " + name_);
    co_return;
  }

 private:
  Log* log_;
  std::string name_;
  bool fail_;
};

Task<Result<void>> co_run(Log* log, std::vector<std::pair<std::string, bool>> spec) {
  std::vector<std::unique_ptr<Action>> actions;
  for (auto& [name, fail] : spec) actions.push_back(std::make_unique<Recorder>(log, name, fail));
  co_return co_await co_run_actions(std::move(actions));
}

TEST(Transaction, CommitsAllWhenEveryPrepareSucceeds) {
  Engine engine;
  Log log;
  ASSERT_TRUE(engine.run(co_run(&log, {{"a", false}, {"b", false}})));
  EXPECT_EQ(log.calls, (std::vector<std::string>{"prepare a", "prepare b", "commit b", "commit a",
                                                 "clean b", "clean a"}));
}

TEST(Transaction, FirstFailureAbortsEverythingPreparedAndStops) {
  Engine engine;
  Log log;
  auto r = engine.run(co_run(&log, {{"a", false}, {"b", true}, {"c", false}}));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message, "b failed");
  EXPECT_EQ(log.calls, (std::vector<std::string>{"prepare a", "prepare b", "abort b", "abort a",
                                                 "clean b", "clean a"}));
}

class SnapshotRollback : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("strata-txn-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string path(const char* name) { return (dir_ / name).string(); }
  std::filesystem::path dir_;
};

Task<Result<json>> co_call(QmpContext* ctx, std::string name, json args) {
  co_return co_await co_execute_command(*ctx, std::move(name), std::move(args));
}

Task<Result<void>> co_make_qcow2(Engine* e, std::string path) {
  qcow2::CreateOptions o;
  o.size = 1 << 20;
  co_return co_await qcow2::co_create_image(*e, std::move(path), o);
}

TEST_F(SnapshotRollback, FailingLastActionLeavesTheGraphAsItWas) {
  Engine engine;
  QmpContext ctx(engine);
  ASSERT_TRUE(engine.run(co_make_qcow2(&engine, path("a.qcow2"))));
  ASSERT_TRUE(engine.run(co_make_qcow2(&engine, path("ov.qcow2"))));
  auto add = [&](json o) { return engine.run(co_call(&ctx, "blockdev-add", std::move(o))); };
  ASSERT_TRUE(add({{"driver", "null-co"}, {"node-name", "base"}, {"size", 1 << 20}}));
  ASSERT_TRUE(add({{"driver", "qcow2"},
                   {"node-name", "ov"},
                   {"backing", nullptr},
                   {"file", {{"driver", "file"}, {"filename", path("ov.qcow2")}}}}));
  json actions = json::array();
  actions.push_back(
      {{"type", "blockdev-snapshot"}, {"data", {{"node", "base"}, {"overlay", "ov"}}}});
  actions.push_back(
      {{"type", "blockdev-snapshot-sync"},
       {"data",
        {{"node-name", "ov"}, {"snapshot-file", path("s.qcow2")}, {"snapshot-node-name", "s"}}}});
  actions.push_back({{"type", "abort"}, {"data", json::object()}});
  auto r = engine.run(co_call(&ctx, "transaction", {{"actions", actions}}));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message, "Transaction aborted using Abort action");
  Graph& g = engine.graph();
  EXPECT_EQ(g.find("s"), nullptr);
  ASSERT_NE(g.find("ov"), nullptr);
  EXPECT_EQ(g.find("ov")->backing(), nullptr);
  EXPECT_TRUE(g.find("base")->parents().empty());
  EXPECT_FALSE(g.find("base")->read_only());
  // Without the abort the same actions succeed.
  actions.erase(2);
  ASSERT_TRUE(engine.run(co_call(&ctx, "transaction", {{"actions", actions}})));
  EXPECT_EQ(g.find("ov")->backing()->node(), g.find("base"));
  EXPECT_TRUE(g.find("base")->read_only());
  engine.run(engine.co_close_all());
}

}  // namespace
}  // namespace strata::qmp
