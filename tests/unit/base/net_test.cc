// Stream socket options: the send buffer a server asks for is the one the
// kernel uses (up to net.core.wmem_max). Writes from a pipe (splice) keep
// their place among ordinary writes, also when the socket is full, and a
// close ends one that waits for room.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "base/loop.h"
#include "base/net.h"
#include "base/pipe.h"

namespace strata {
namespace {

size_t wmem_max() {
  std::ifstream f("/proc/sys/net/core/wmem_max");
  size_t v = 0;
  f >> v;
  return v;
}

TEST(StreamTest, SendBufferGrowsAsAsked) {
  Loop loop;
  std::string path =
      (std::filesystem::temp_directory_path() / ("strata-net-" + std::to_string(::getpid())))
          .string();
  std::unique_ptr<Stream> accepted;
  auto listener = Listener::listen_unix(
      loop, path, [&](std::unique_ptr<Stream> s) { accepted = std::move(s); });
  ASSERT_TRUE(listener) << listener.error().message;
  auto client = loop.run(co_connect_unix(loop, path));
  ASSERT_TRUE(client) << client.error().message;
  while (!accepted) loop.run(loop.co_sleep(1));

  const size_t want = 1u << 20;
  size_t before = accepted->send_buffer();
  ASSERT_GT(before, 0u);
  accepted->set_send_buffer(want);
  size_t after = accepted->send_buffer();
  // Linux doubles the value asked for, within wmem_max (doubled too).
  size_t cap = wmem_max();
  if (cap == 0 || cap >= want) {
    EXPECT_GE(after, want);
  } else {
    EXPECT_GE(after, cap);
  }
  if (before < want && cap > before) {
    EXPECT_GT(after, before);
  }
  (*client)->close();
  accepted->close();
}

// A connected pair: `client` dialled, `server` accepted.
struct Pair {
  Loop& loop;
  std::string path;
  std::unique_ptr<Listener> listener;
  std::unique_ptr<Stream> client, server;
  explicit Pair(Loop& l) : loop(l) {
    path = (std::filesystem::temp_directory_path() / ("strata-pipe-" + std::to_string(::getpid())))
               .string();
    auto lr = Listener::listen_unix(loop, path,
                                    [this](std::unique_ptr<Stream> s) { server = std::move(s); });
    EXPECT_TRUE(lr);
    listener = std::move(*lr);
    auto c = loop.run(co_connect_unix(loop, path));
    EXPECT_TRUE(c);
    client = std::move(*c);
    while (!server) loop.run(loop.co_sleep(1));
  }
};

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; i++) v[i] = static_cast<uint8_t>(seed + i * 7 + i / 4096);
  return v;
}

Task<void> co_write_bytes(Stream& s, const std::vector<uint8_t>& data, int* failures) {
  // (Not `if (!co_await ...)`: GCC 12 then never ran this coroutine.)
  auto r = co_await s.co_write(std::span<const uint8_t>(data));
  if (!r) ++*failures;
}

Task<void> co_write_pipe(Stream& s, Pipe& pipe, int* failures) {
  auto r = co_await s.co_write_from_pipe(pipe);
  if (!r) ++*failures;
}

TEST(StreamTest, PipeWritesKeepTheirPlaceBehindAFullSocket) {
  Loop loop;
  Pair pair(loop);
  pair.server->set_send_buffer(16 << 10);
  auto a = pattern(300 << 10, 1), b = pattern(4096, 2), c = pattern(100, 3);
  auto p1_data = pattern(512 << 10, 4), p2_data = pattern(200 << 10, 5);
  auto p1 = Pipe::create(1 << 20), p2 = Pipe::create(1 << 20);
  ASSERT_TRUE(p1 && p2);
  if ((*p1)->capacity() < p1_data.size()) GTEST_SKIP() << "pipes limited to " << (*p1)->capacity();
  ASSERT_TRUE((*p1)->fill_from(IoVec(p1_data.data(), p1_data.size())));
  ASSERT_TRUE((*p2)->fill_from(IoVec(p2_data.data(), p2_data.size())));
  int failures = 0;
  // Submitted in this order while nobody reads: the socket fills at once.
  loop.spawn(co_write_bytes(*pair.server, a, &failures));
  loop.spawn(co_write_pipe(*pair.server, **p1, &failures));
  loop.spawn(co_write_bytes(*pair.server, b, &failures));
  loop.spawn(co_write_pipe(*pair.server, **p2, &failures));
  loop.spawn(co_write_bytes(*pair.server, c, &failures));
  loop.run(loop.co_sleep(50));
  std::vector<uint8_t> want;
  for (const auto* part : {&a, &p1_data, &b, &p2_data, &c}) {
    want.insert(want.end(), part->begin(), part->end());
  }
  std::vector<uint8_t> got(want.size());
  auto r = loop.run(pair.client->co_read_exact(got));
  ASSERT_TRUE(r) << r.error().message;
  loop.run(loop.co_sleep(1));
  EXPECT_EQ(failures, 0);
  EXPECT_EQ((*p1)->buffered(), 0u);
  EXPECT_EQ((*p2)->buffered(), 0u);
  size_t first_difference = 0;
  while (first_difference < got.size() && got[first_difference] == want[first_difference]) {
    first_difference++;
  }
  EXPECT_EQ(first_difference, want.size())
      << "segments end at " << a.size() << ", " << a.size() + p1_data.size() << ", ...";
}

TEST(StreamTest, ClosingEndsAPipeWriteThatWaitsForRoom) {
  Loop loop;
  Pair pair(loop);
  pair.server->set_send_buffer(16 << 10);
  auto data = pattern(1 << 20, 6);
  auto pipe = Pipe::create(1 << 20);
  ASSERT_TRUE(pipe);
  if ((*pipe)->capacity() < data.size()) GTEST_SKIP() << "pipes limited";
  ASSERT_TRUE((*pipe)->fill_from(IoVec(data.data(), data.size())));
  int failures = 0;
  bool done = false;
  loop.spawn([](Stream& s, Pipe& p, int* f, bool* d) -> Task<void> {
    co_await co_write_pipe(s, p, f);
    *d = true;
  }(*pair.server, **pipe, &failures, &done));
  loop.run(loop.co_sleep(50));
  EXPECT_FALSE(done);  // the client reads nothing: the write waits for room
  pair.server->close();
  for (int i = 0; i < 100 && !done; i++) loop.run(loop.co_sleep(1));
  EXPECT_TRUE(done);
  EXPECT_EQ(failures, 1);
  pair.client->close();
}

// A peer that reads nothing holds a large write up forever; close() lets
// it wait (the peer may still read), abort() fails it at once, and the
// stream is destroyed without waiting either.
TEST(StreamTest, AbortFailsWritesAPeerDoesNotRead) {
  Loop loop;
  Pair pair(loop);
  pair.server->set_send_buffer(16 << 10);
  auto data = pattern(8 << 20, 7);
  int failures = 0;
  bool done = false;
  loop.spawn([](Stream& s, const std::vector<uint8_t>& d, int* f, bool* flag) -> Task<void> {
    co_await co_write_bytes(s, d, f);
    *flag = true;
  }(*pair.server, data, &failures, &done));
  loop.run(loop.co_sleep(50));
  EXPECT_FALSE(done);
  pair.server->close();
  loop.run(loop.co_sleep(50));
  EXPECT_FALSE(done);  // still queued: a closing peer may read it yet
  pair.server->abort();
  for (int i = 0; i < 100 && !done; i++) loop.run(loop.co_sleep(1));
  EXPECT_TRUE(done);
  EXPECT_EQ(failures, 1);
  pair.server.reset();
  pair.client.reset();
  loop.run(loop.co_sleep(1));
}

// A burst of connections is queued by the kernel (the listen backlog is
// SOMAXCONN, not 128): 300 non-blocking connects made before the loop
// accepts any all succeed, and every one is then accepted.
TEST(ListenerTest, BurstOfNonBlockingConnectsIsAllAccepted) {
  Loop loop;
  std::string path =
      (std::filesystem::temp_directory_path() / ("strata-burst-" + std::to_string(::getpid())))
          .string();
  std::vector<std::unique_ptr<Stream>> accepted;
  auto listener = Listener::listen_unix(
      loop, path, [&](std::unique_ptr<Stream> s) { accepted.push_back(std::move(s)); });
  ASSERT_TRUE(listener) << listener.error().message;
  constexpr int kConnects = 300;
  std::vector<int> fds;
  int refused = 0;
  for (int i = 0; i < kConnects; i++) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) refused++;
    fds.push_back(fd);
  }
  EXPECT_EQ(refused, 0);
  for (int i = 0; i < 1000 && accepted.size() < static_cast<size_t>(kConnects); i++) {
    loop.run(loop.co_sleep(1));
  }
  EXPECT_EQ(accepted.size(), static_cast<size_t>(kConnects));
  for (int fd : fds) ::close(fd);
  EXPECT_GE(default_listen_backlog(), kConnects);
}

}  // namespace
}  // namespace strata
