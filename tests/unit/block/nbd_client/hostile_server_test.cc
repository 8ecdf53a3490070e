// The NBD client driver against scripted servers that break the protocol:
// each must give a clear open error, or EIO on the affected requests and a
// disconnect, never a crash, a hang or an allocation sized by the server.
#include <gtest/gtest.h>

#include <atomic>
#include <vector>

#include "base/sync.h"
#include "block/core/graph.h"
#include "fake_server.h"
#include "nbd/protocol.h"
#include "strata/engine.h"

namespace strata::nbdc::testing {
namespace {

using namespace strata::nbd;

constexpr uint32_t kReqLen = 4096;

std::vector<uint8_t> be_bytes(std::initializer_list<uint64_t> u64s) {
  Writer w;
  for (uint64_t v : u64s) w.u64(v);
  return std::move(w.bytes());
}

class NbdHostileServerTest : public ::testing::Test {
 protected:
  void TearDown() override { engine_.run(engine_.co_close_all()); }

  Result<Node*> open(const FakeServer& server) {
    nlohmann::json o = {{"driver", "nbd"},
                        {"node-name", "remote"},
                        {"server", {{"type", "unix"}, {"path", server.path()}}},
                        {"export", "e"}};
    return engine_.run(engine_.graph().co_add(o));
  }
  Node* open_ok(const FakeServer& server) {
    auto n = open(server);
    EXPECT_TRUE(n) << n.error().message;
    return n ? *n : nullptr;
  }
  Result<void> read(Node* n, uint64_t offset, uint64_t length) {
    std::vector<uint8_t> buf(length);
    IoVec v(buf.data(), buf.size());
    return engine_.run(n->co_preadv(offset, v, 0));
  }
  // Runs the loop until the server saw the client go (bounded).
  void expect_disconnect(const std::atomic<bool>& closed, const std::atomic<bool>& done) {
    for (int i = 0; i < 500 && !done; i++) engine_.run(engine_.loop().co_sleep(10));
    EXPECT_TRUE(closed) << "the client kept the connection";
  }
  // One read whose reply is scripted by `reply`; checks EIO and disconnect.
  void expect_read_fails(const FakeExport& exp,
                         std::function<void(FakeServer&, const FakeRequest&)> reply) {
    std::atomic<bool> closed{false}, done{false};
    FakeServer server([&](FakeServer& s) {
      FakeRequest r;
      if (s.handshake(exp) && s.read_request_of(kCmdRead, &r)) reply(s, r);
      closed = s.wait_closed();
      done = true;
    });
    Node* n = open_ok(server);
    ASSERT_NE(n, nullptr);
    auto r = read(n, kReqLen, kReqLen);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, EIO) << r.error().message;
    expect_disconnect(closed, done);
    // Later requests fail at once (no reconnect-delay), without hanging.
    auto later = read(n, 0, kReqLen);
    ASSERT_FALSE(later);
    EXPECT_EQ(later.error().code, EIO);
  }

  // Two reads in flight at once: [0, 4k) and [4k, 8k) (into *second).
  std::pair<Result<void>, Result<void>> read_two(Node* n, std::vector<uint8_t>* second) {
    std::vector<uint8_t> first(kReqLen);
    Result<void> ra = Error{}, rb = Error{};
    TaskGroup group(engine_.loop());
    group.spawn(co_read_into(n, 0, &first, &ra));
    group.spawn(co_read_into(n, kReqLen, second, &rb));
    engine_.run(group.co_join());
    return {std::move(ra), std::move(rb)};
  }
  static Task<void> co_read_into(Node* n, uint64_t offset, std::vector<uint8_t>* buf,
                                 Result<void>* out) {
    IoVec v(buf->data(), buf->size());
    *out = co_await n->co_preadv(offset, v, 0);
  }

  Engine engine_;
};

TEST_F(NbdHostileServerTest, GarbageInsteadOfMagicIsAnOpenError) {
  FakeServer server([](FakeServer& s) {
    std::string junk = "HTTP/1.1 400 Bad Request\r\n\r\n";
    s.send(std::vector<uint8_t>(junk.begin(), junk.end()));
  });
  auto n = open(server);
  ASSERT_FALSE(n);
  EXPECT_NE(n.error().message.find("Not an NBD server"), std::string::npos) << n.error().message;
}

TEST_F(NbdHostileServerTest, OversizedOptionReplyIsRefusedBeforeAllocating) {
  FakeServer server([](FakeServer& s) {
    Writer hello;
    hello.u64(kNbdMagic).u64(kIHaveOpt).u16(kFlagFixedNewstyle | kFlagNoZeroes);
    std::vector<uint8_t> buf;
    if (!s.send(hello.bytes()) || !s.recv(4, &buf) || !s.recv(16, &buf)) return;
    Writer w;  // claims 4 GiB of reply data, sends none
    w.u64(kOptReplyMagic).u32(Reader(buf.data() + 8, 4).u32()).u32(kRepAck).u32(0xfffffff0u);
    s.send(w.bytes());
    s.wait_closed();
  });
  auto n = open(server);
  ASSERT_FALSE(n);
  EXPECT_NE(n.error().message.find("oversized option reply"), std::string::npos)
      << n.error().message;
}

TEST_F(NbdHostileServerTest, AbsurdExportSizeIsAnOpenError) {
  FakeServer server([](FakeServer& s) {
    FakeExport exp;
    exp.size = ~0ull - 511;
    s.handshake(exp);
    s.wait_closed();
  });
  auto n = open(server);
  ASSERT_FALSE(n);
  EXPECT_NE(n.error().message.find("export size"), std::string::npos) << n.error().message;
}

TEST_F(NbdHostileServerTest, ExportSizeNotAMultipleOfTheBlockSizeIsAnOpenError) {
  FakeServer server([](FakeServer& s) {
    FakeExport exp;
    exp.size = (1 << 20) + 100;
    exp.min_block = 512;
    exp.max_block = 1 << 20;
    s.handshake(exp);
    s.wait_closed();
  });
  auto n = open(server);
  ASSERT_FALSE(n);
  EXPECT_NE(n.error().message.find("export size"), std::string::npos) << n.error().message;
}

TEST_F(NbdHostileServerTest, ReplyToUnknownCookie) {
  expect_read_fails({}, [](FakeServer& s, const FakeRequest& r) {
    s.chunk(kReplyFlagDone, kChunkNone, r.cookie + 1000, {});
  });
}

TEST_F(NbdHostileServerTest, DataChunkBeforeTheRequestedRange) {
  expect_read_fails({}, [](FakeServer& s, const FakeRequest& r) {
    s.data_chunk(r.cookie, r.offset - kReqLen, std::vector<uint8_t>(kReqLen, 0xaa));
  });
}

TEST_F(NbdHostileServerTest, DataChunkReachingPastTheRequest) {
  expect_read_fails({}, [](FakeServer& s, const FakeRequest& r) {
    s.data_chunk(r.cookie, r.offset + 512, std::vector<uint8_t>(kReqLen, 0xaa));
  });
}

TEST_F(NbdHostileServerTest, DataChunkLongerThanTheRequest) {
  expect_read_fails({}, [](FakeServer& s, const FakeRequest& r) {
    s.data_chunk(r.cookie, r.offset, std::vector<uint8_t>(2 * kReqLen, 0xaa));
  });
}

TEST_F(NbdHostileServerTest, HoleChunkOutsideTheRequest) {
  expect_read_fails({}, [](FakeServer& s, const FakeRequest& r) {
    Writer w;
    w.u64(r.offset + kReqLen).u32(kReqLen);
    s.chunk(kReplyFlagDone, kChunkOffsetHole, r.cookie, w.bytes());
  });
}

TEST_F(NbdHostileServerTest, ReadReplyThatDoesNotCoverTheRequest) {
  expect_read_fails({}, [](FakeServer& s, const FakeRequest& r) {
    s.data_chunk(r.cookie, r.offset, std::vector<uint8_t>(kReqLen / 2, 0xaa), false);
    s.chunk(kReplyFlagDone, kChunkNone, r.cookie, {});
  });
}

TEST_F(NbdHostileServerTest, UnknownChunkType) {
  expect_read_fails({}, [](FakeServer& s, const FakeRequest& r) {
    s.chunk(kReplyFlagDone, 0x0777, r.cookie, std::vector<uint8_t>(16, 0));
  });
}

TEST_F(NbdHostileServerTest, ChunkLengthPastTheLimitIsNotAllocated) {
  expect_read_fails({}, [](FakeServer& s, const FakeRequest& r) {
    s.chunk(kReplyFlagDone, kChunkError, r.cookie, {}, 0xfffffff0u);
  });
}

TEST_F(NbdHostileServerTest, ExtendedChunkLengthPastTheLimitIsNotAllocated) {
  FakeExport exp;
  exp.extended = true;
  expect_read_fails(exp, [](FakeServer& s, const FakeRequest& r) {
    EXPECT_TRUE(s.extended());
    s.chunk(kReplyFlagDone, kChunkOffsetData, r.cookie, {}, 1ull << 62);
  });
}

TEST_F(NbdHostileServerTest, NoneChunkWithPayload) {
  expect_read_fails({}, [](FakeServer& s, const FakeRequest& r) {
    s.chunk(kReplyFlagDone, kChunkNone, r.cookie, std::vector<uint8_t>(8, 0));
  });
}

TEST_F(NbdHostileServerTest, SimpleReplyWhereStructuredWasNegotiated) {
  expect_read_fails({}, [](FakeServer& s, const FakeRequest& r) {
    s.simple_reply(r.cookie, 0, std::vector<uint8_t>(kReqLen, 0xaa));
  });
}

TEST_F(NbdHostileServerTest, BadReplyMagic) {
  expect_read_fails({}, [](FakeServer& s, const FakeRequest& r) {
    s.send(be_bytes({0x1122334455667788ull, r.cookie, 0}));
  });
}

TEST_F(NbdHostileServerTest, ClosesMidPayload) {
  expect_read_fails({}, [](FakeServer& s, const FakeRequest& r) {
    Writer w;
    w.u32(kStructuredReplyMagic).u16(kReplyFlagDone).u16(kChunkOffsetData).u64(r.cookie);
    w.u32(8 + kReqLen).u64(r.offset).zeroes(100);
    s.send(w.bytes());
    s.hang_up();
  });
}

// Block status replies: a status query fails with EIO and disconnects.
class NbdHostileStatusTest : public NbdHostileServerTest {
 protected:
  void expect_status_fails(std::function<void(FakeServer&, const FakeRequest&)> reply) {
    std::atomic<bool> closed{false}, done{false};
    FakeServer server([&](FakeServer& s) {
      FakeRequest r;
      if (s.handshake({}) && s.read_request_of(kCmdBlockStatus, &r)) reply(s, r);
      closed = s.wait_closed();
      done = true;
    });
    Node* n = open_ok(server);
    ASSERT_NE(n, nullptr);
    auto st = engine_.run(n->co_block_status(0, 65536));
    ASSERT_FALSE(st);
    EXPECT_EQ(st.error().code, EIO) << st.error().message;
    expect_disconnect(closed, done);
  }
};

std::vector<uint8_t> status_payload(uint32_t id, std::initializer_list<uint32_t> extents) {
  Writer w;
  w.u32(id);
  for (uint32_t v : extents) w.u32(v);
  return std::move(w.bytes());
}

TEST_F(NbdHostileStatusTest, ZeroLengthExtent) {
  expect_status_fails([](FakeServer& s, const FakeRequest& r) {
    s.chunk(kReplyFlagDone, kChunkBlockStatus, r.cookie, status_payload(7, {0, 0}));
  });
}

TEST_F(NbdHostileStatusTest, WrongContextId) {
  expect_status_fails([](FakeServer& s, const FakeRequest& r) {
    s.chunk(kReplyFlagDone, kChunkBlockStatus, r.cookie, status_payload(8, {4096, 0}));
  });
}

TEST_F(NbdHostileStatusTest, TruncatedDescriptor) {
  expect_status_fails([](FakeServer& s, const FakeRequest& r) {
    s.chunk(kReplyFlagDone, kChunkBlockStatus, r.cookie, status_payload(7, {4096}));
  });
}

TEST_F(NbdHostileStatusTest, NoExtentAtAll) {
  expect_status_fails([](FakeServer& s, const FakeRequest& r) {
    s.chunk(kReplyFlagDone, kChunkNone, r.cookie, {});
  });
}

TEST_F(NbdHostileStatusTest, DataChunkForBlockStatus) {
  expect_status_fails([](FakeServer& s, const FakeRequest& r) {
    s.data_chunk(r.cookie, 0, std::vector<uint8_t>(512, 0));
  });
}

// An extent longer than the request is clipped to it (the protocol lets a
// server describe more than was asked); the answer never exceeds the query.
TEST_F(NbdHostileStatusTest, ExtentPastTheRequestIsClipped) {
  FakeServer server([](FakeServer& s) {
    FakeRequest r;
    if (s.handshake({}) && s.read_request_of(kCmdBlockStatus, &r)) {
      s.chunk(kReplyFlagDone, kChunkBlockStatus, r.cookie,
              status_payload(7, {0xfffff000u, kStateHole | kStateZero}));
    }
  });
  Node* n = open_ok(server);
  ASSERT_NE(n, nullptr);
  auto st = engine_.run(n->co_block_status(4096, 65536));
  ASSERT_TRUE(st) << st.error().message;
  EXPECT_EQ(st->bytes, 65536u);
  EXPECT_EQ(st->flags & (kStatusData | kStatusZero), kStatusZero);
}

// A protocol error fails every request in flight, not only the one the
// broken reply names; a server error reply fails only its own request.
TEST_F(NbdHostileServerTest, ProtocolErrorFailsEveryRequestInFlight) {
  std::atomic<bool> closed{false}, done{false};
  FakeServer server([&](FakeServer& s) {
    FakeRequest a, b;
    if (s.handshake({}) && s.read_request_of(kCmdRead, &a) && s.read_request_of(kCmdRead, &b)) {
      s.data_chunk(b.cookie, b.offset, std::vector<uint8_t>(kReqLen, 0xbb));
      s.chunk(kReplyFlagDone, kChunkNone, a.cookie + b.cookie + 1, {});
    }
    closed = s.wait_closed();
    done = true;
  });
  Node* n = open_ok(server);
  ASSERT_NE(n, nullptr);
  std::vector<uint8_t> buf_b(kReqLen);
  auto [ra, rb] = read_two(n, &buf_b);
  ASSERT_FALSE(ra);
  EXPECT_EQ(ra.error().code, EIO);
  // b's data chunk said DONE, so b completed with the server's bytes.
  ASSERT_TRUE(rb) << rb.error().message;
  EXPECT_EQ(buf_b, std::vector<uint8_t>(kReqLen, 0xbb));
  expect_disconnect(closed, done);
}

TEST_F(NbdHostileServerTest, ServerErrorFailsOnlyItsRequest) {
  FakeServer server([&](FakeServer& s) {
    FakeRequest a, b;
    if (s.handshake({}) && s.read_request_of(kCmdRead, &a) && s.read_request_of(kCmdRead, &b)) {
      Writer e;
      e.u32(kEperm).u16(4).str("nope");
      s.chunk(kReplyFlagDone, kChunkError, a.cookie, e.bytes());
      s.data_chunk(b.cookie, b.offset, std::vector<uint8_t>(kReqLen, 0xbb));
    }
  });
  Node* n = open_ok(server);
  ASSERT_NE(n, nullptr);
  std::vector<uint8_t> buf_b(kReqLen);
  auto [ra, rb] = read_two(n, &buf_b);
  ASSERT_FALSE(ra);
  EXPECT_EQ(ra.error().code, EPERM);
  EXPECT_NE(ra.error().message.find("nope"), std::string::npos);
  ASSERT_TRUE(rb) << rb.error().message;
  EXPECT_EQ(buf_b, std::vector<uint8_t>(kReqLen, 0xbb));
}

}  // namespace
}  // namespace strata::nbdc::testing
