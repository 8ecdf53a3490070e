// Stream socket options: the send buffer a server asks for is the one the
// kernel uses (up to net.core.wmem_max).
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "base/loop.h"
#include "base/net.h"

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
  if (before < want && cap > before) EXPECT_GT(after, before);
  (*client)->close();
  accepted->close();
}

}  // namespace
}  // namespace strata
