// The dispatcher without sockets: negotiation, envelopes, ids, classes,
// events and the QMP text rendering.
#include "qmp/dispatcher.h"

#include <gtest/gtest.h>

#include "qmp/context.h"

namespace strata::qmp {
namespace {

class DispatcherTest : public ::testing::Test {
 protected:
  json send(const std::string& text) {
    JsonStreamReader reader;
    std::vector<JsonMessage> messages;
    reader.feed(text + "\n", &messages);
    EXPECT_EQ(messages.size(), 1u);
    return engine.run(co_dispatch(ctx, session, std::move(messages[0])));
  }
  Engine engine;
  QmpContext ctx{engine};
  Session session;
};

TEST_F(DispatcherTest, NegotiationThenCommands) {
  EXPECT_EQ(send(R"({"execute": "query-block", "id": 1})"),
            (json{{"id", 1},
                  {"error",
                   {{"class", "CommandNotFound"},
                    {"desc", "Expecting capabilities negotiation with 'qmp_capabilities'"}}}}));
  EXPECT_EQ(send(R"({"execute": "qmp_capabilities"})"), (json{{"return", json::object()}}));
  EXPECT_TRUE(session.negotiated);
  EXPECT_EQ(send(R"({"execute": "query-block", "id": [1, {"a": null}]})"),
            (json{{"return", json::array()}, {"id", json::array({1, {{"a", nullptr}}})}}));
  EXPECT_EQ(send(R"({"execute": "nope"})")["error"]["class"], "CommandNotFound");
  EXPECT_EQ(send(R"({"execute": "query-block", "arguments": {"x": 1}})")["error"]["desc"],
            "Parameter 'x' is unexpected");
}

TEST_F(DispatcherTest, EventsReachTheSinkWithTimestamps) {
  std::vector<json> events;
  ctx.set_event_sink([&events](const std::string& name, const json& data) {
    events.push_back(make_event(name, data));
  });
  ctx.emit_event("JOB_STATUS_CHANGE", {{"id", "j"}, {"status", "created"}});
  ctx.emit_event("NO_DATA");
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0]["event"], "JOB_STATUS_CHANGE");
  EXPECT_EQ(events[0]["data"]["status"], "created");
  EXPECT_GT(events[0]["timestamp"]["seconds"].get<int64_t>(), 1600000000);
  EXPECT_LT(events[0]["timestamp"]["microseconds"].get<int64_t>(), 1000000);
  EXPECT_FALSE(events[1].contains("data"));
}

Task<void> co_mark(int* count) {
  ++*count;
  co_return;
}

TEST_F(DispatcherTest, ShutdownHooksRunOnceInOrder) {
  int count = 0;
  ctx.add_shutdown_hook([&count] { return co_mark(&count); });
  ctx.add_shutdown_hook([&count] { return co_mark(&count); });
  engine.run(ctx.co_run_shutdown_hooks());
  EXPECT_EQ(count, 2);
  engine.run(ctx.co_run_shutdown_hooks());
  EXPECT_EQ(count, 2);
}

TEST(QmpText, RendersLikeQemu) {
  EXPECT_EQ(to_qmp_text(json{{"return", json::object()}}), R"({"return": {}})");
  EXPECT_EQ(to_qmp_text(json{{"a", json::array({1, "x", true, nullptr})}}),
            R"({"a": [1, "x", true, null]})");
  EXPECT_EQ(to_qmp_text(json("\xc3\xa9\xf0\x9f\x98\x80\n\"")), R"("\u00E9\uD83D\uDE00\n\"")");
  EXPECT_EQ(to_qmp_text(json(std::string("bad\xff"))), R"("bad\uFFFD")");
  // Invalid sequences are one U+FFFD each, counted as QEMU counts them;
  // C0 80 is U+0000.
  EXPECT_EQ(to_qmp_text(json(std::string("\xc0\xaf|\xed\xa0\x80|\xe2\x82x|\xc0\x80|\x7f"))),
            R"("\uFFFD|\uFFFD|\uFFFDx|\u0000|\u007F")");
  // Doubles as QEMU's "%.17g".
  EXPECT_EQ(to_qmp_text(json{1500.0, 1e20, 0.1}), "[1500, 1e+20, 0.10000000000000001]");
}

}  // namespace
}  // namespace strata::qmp
