#include "block/drivers/nbd/address.h"

#include <gtest/gtest.h>

namespace strata::nbdc {
namespace {

TEST(NbdAddressTest, ParsesQemuUriForms) {
  auto a = parse_nbd_filename("nbd+unix:///disk?socket=/run/s.sock");
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->unix_path, "/run/s.sock");
  EXPECT_EQ(a->export_name, "disk");
  EXPECT_EQ(a->uri(), "nbd+unix:///disk?socket=/run/s.sock");

  auto t = parse_nbd_filename("nbd://example.org:10810/my%20disk");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->host, "example.org");
  EXPECT_EQ(t->port, 10810);
  EXPECT_EQ(t->export_name, "my disk");
  EXPECT_EQ(t->uri(), "nbd://example.org:10810/my%20disk");

  auto d = parse_nbd_filename("nbd+tcp://[::1]/");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->host, "::1");
  EXPECT_EQ(d->port, kDefaultPort);
  EXPECT_EQ(d->export_name, "");

  auto legacy = parse_nbd_filename("nbd:unix:/tmp/s:exportname=e");
  ASSERT_TRUE(legacy);
  EXPECT_EQ(legacy->unix_path, "/tmp/s");
  EXPECT_EQ(legacy->export_name, "e");
  auto legacy_tcp = parse_nbd_filename("nbd:localhost:10809");
  ASSERT_TRUE(legacy_tcp);
  EXPECT_EQ(legacy_tcp->host, "localhost");
}

TEST(NbdAddressTest, RefusesMalformedUris) {
  for (const char* bad :
       {"nbd+unix://host/e?socket=/s", "nbd+unix:///e", "nbd+unix:///e?socket=", "nbd://:10809/e",
        "nbd://h:0/e", "nbd://h:99999/e", "nbd://h:12ab/e", "nbd://h/e?socket=/s", "nbd://h/%zz",
        "nbds://h/e", "nbd://[::1/e", "nbd:unix:", "nbd::10809"}) {
    auto r = parse_nbd_filename(bad);
    EXPECT_FALSE(r) << bad;
    if (!r) {
      EXPECT_EQ(r.error().code, EINVAL) << bad;
    }
  }
}

TEST(NbdAddressTest, ParsesServerOption) {
  auto u = parse_server_option({{"type", "unix"}, {"path", "/s"}}, "x");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->unix_path, "/s");
  EXPECT_EQ(u->export_name, "x");
  auto i = parse_server_option({{"type", "inet"}, {"host", "h"}, {"port", "1234"}}, "");
  ASSERT_TRUE(i);
  EXPECT_EQ(i->port, 1234);
  EXPECT_EQ(i->server_json()["port"], "1234");
  EXPECT_FALSE(parse_server_option({{"type", "inet"}, {"host", "h"}}, ""));
  EXPECT_FALSE(parse_server_option({{"type", "vsock"}, {"cid", "3"}}, ""));
  EXPECT_FALSE(parse_server_option({{"type", "unix"}}, ""));
  EXPECT_FALSE(parse_server_option("unix", ""));
}

}  // namespace
}  // namespace strata::nbdc
