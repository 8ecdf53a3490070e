// nbd::Server export removal: begin_remove_export's checks, the deleted
// callback once per export, and co_stop() while removals are still waiting
// for their clients.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "block/core/graph.h"
#include "nbd/server.h"
#include "strata/engine.h"

namespace strata::nbd {
namespace {

// A client that leaves a little after it is told to, like a connection
// finishing its requests in flight.
struct SlowClient final : ExportClient {
  SlowClient(Loop& loop, Export* exp) : loop(loop), exp(exp) {}
  void disconnect() override {
    if (!leaving) {
      leaving = true;
      loop.spawn(co_leave());
    }
  }
  Task<void> co_leave() {
    co_await loop.co_sleep(20);
    exp->detach_client(this);
    gone = true;
  }
  Loop& loop;
  Export* exp;
  bool leaving = false;
  bool gone = false;
};

class NbdServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* name : {"n0", "n1"}) {
      auto n = engine_.run(
          engine_.graph().co_add({{"driver", "null-co"}, {"node-name", name}, {"size", 1 << 20}}));
      ASSERT_TRUE(n) << n.error().message;
    }
    server_ = std::make_unique<Server>(engine_, ServerOptions{});
    server_->set_on_export_deleted([this](const std::string& id) { deleted_.push_back(id); });
  }
  void TearDown() override {
    engine_.run(server_->co_stop());
    server_.reset();
    engine_.run(engine_.co_close_all());
  }
  Export* add(const std::string& id, const std::string& node) {
    ExportOptions o;
    o.id = id;
    o.name = id;
    o.node_name = node;
    auto e = server_->add_export(o);
    EXPECT_TRUE(e) << e.error().message;
    return e ? *e : nullptr;
  }

  Engine engine_;
  std::unique_ptr<Server> server_;
  std::vector<std::string> deleted_;
};

TEST_F(NbdServerTest, RemovalChecksAndAsynchronousDeletion) {
  Export* e0 = add("e0", "n0");
  SlowClient client(engine_.loop(), e0);
  ASSERT_TRUE(e0->attach_client(&client));
  auto missing = server_->begin_remove_export("nope", RemoveMode::kHard);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().message, "Export 'nope' is not found");
  auto safe = server_->begin_remove_export("e0", RemoveMode::kSafe);
  ASSERT_FALSE(safe);
  EXPECT_EQ(safe.error().message, "export 'e0' still in use");
  ASSERT_TRUE(server_->begin_remove_export("e0", RemoveMode::kHard));
  EXPECT_TRUE(e0->closing());
  EXPECT_TRUE(deleted_.empty());  // the client has not left yet
  auto again = server_->begin_remove_export("e0", RemoveMode::kHard);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().message, "Export 'e0' is already shutting down");
  while (server_->export_by_id("e0")) engine_.run(engine_.loop().co_sleep(5));
  EXPECT_TRUE(client.gone);
  EXPECT_EQ(deleted_, std::vector<std::string>{"e0"});
  // The id and the node are free again.
  EXPECT_NE(add("e0", "n0"), nullptr);
}

TEST_F(NbdServerTest, StopWaitsForPendingRemovals) {
  Export* e0 = add("e0", "n0");
  add("e1", "n1");
  SlowClient client(engine_.loop(), e0);
  ASSERT_TRUE(e0->attach_client(&client));
  ASSERT_TRUE(server_->begin_remove_export("e0", RemoveMode::kHard));
  engine_.run(server_->co_stop());
  EXPECT_TRUE(client.gone);
  EXPECT_TRUE(server_->exports().empty());
  ASSERT_EQ(deleted_.size(), 2u);
  EXPECT_NE(deleted_[0], deleted_[1]);
}

}  // namespace
}  // namespace strata::nbd
