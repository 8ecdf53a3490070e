#include "block/drivers/nbd/address.h"

#include <gtest/gtest.h>

namespace strata::nbdc {
namespace {

nlohmann::json options(const std::string& name) {
  auto r = nbd_filename_options(name);
  EXPECT_TRUE(r) << name << ": " << (r ? "" : r.error().message);
  return r ? *r : nlohmann::json();
}

nlohmann::json unix_server(const std::string& path) {
  return {{"type", "unix"}, {"path", path}};
}

nlohmann::json inet_server(const std::string& host, const std::string& port) {
  return {{"type", "inet"}, {"host", host}, {"port", port}};
}

// The options QEMU 7.2's nbd_parse_filename makes of each form (checked
// against qemu-img info on the same names).
TEST(NbdAddressTest, ParsesQemuUriForms) {
  EXPECT_EQ(options("nbd+unix:///disk?socket=/run/s.sock"),
            (nlohmann::json{{"export", "disk"}, {"server", unix_server("/run/s.sock")}}));
  EXPECT_EQ(options("nbd+unix:///my%20disk?socket=%2Frun%2Fs"),
            (nlohmann::json{{"export", "my disk"}, {"server", unix_server("/run/s")}}));
  EXPECT_EQ(options("nbd+unix://?socket=/s"), (nlohmann::json{{"server", unix_server("/s")}}));
  EXPECT_EQ(
      options("nbd://example.org:10810/my%20disk"),
      (nlohmann::json{{"export", "my disk"}, {"server", inet_server("example.org", "10810")}}));
  EXPECT_EQ(options("nbd+tcp://[::1]/"), (nlohmann::json{{"server", inet_server("::1", "10809")}}));
  // Port 0 means the default; user info, an empty query and the fragment
  // are ignored; only one leading slash is dropped from the export.
  EXPECT_EQ(options("nbd://u@h:0/e?#f"),
            (nlohmann::json{{"export", "e"}, {"server", inet_server("h", "10809")}}));
  EXPECT_EQ(options("nbd://h//e")["export"], "/e");
  EXPECT_EQ(options("nbd:unix:/tmp/s:exportname=e"),
            (nlohmann::json{{"export", "e"}, {"server", unix_server("/tmp/s")}}));
  EXPECT_EQ(options("nbd:localhost:10809"),
            (nlohmann::json{{"server", inet_server("localhost", "10809")}}));
  EXPECT_EQ(options("nbd:[::1]:10811:exportname=a:b"),
            (nlohmann::json{{"export", "a:b"}, {"server", inet_server("::1", "10811")}}));
}

TEST(NbdAddressTest, RefusesMalformedNamesWithQemusMessages) {
  for (const char* bad :
       {"nbd+unix://host/e?socket=/s", "nbd+unix:///e", "nbd+unix:///e?socket", "nbd+unix:///e?a=1",
        "nbd+unix:///e?socket=/s;a=1", "nbd+unix://:5/e?socket=/s", "nbd://:10809/e", "nbd:///e",
        "nbd://h:99999/e", "nbd://h:/e", "nbd://h:12ab/e", "nbd://h/e?socket=/s", "nbd://h/%zz",
        "nbd://h/e x", "nbd://h/e\"x", "nbd://h|x/e", "nbd://[::1/e", "nbds://h/e"}) {
    auto r = nbd_filename_options(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, EINVAL) << bad;
    EXPECT_EQ(r.error().message, "No valid URL specified") << bad;
  }
  auto legacy = [](const char* name) {
    auto r = nbd_filename_options(name);
    return r ? std::string("ok") : r.error().message;
  };
  EXPECT_EQ(legacy("nbd:"), "NBD server address missing");
  EXPECT_EQ(legacy("nbd:unix:/s:exportname="), "NBD server address missing");
  EXPECT_EQ(legacy("nbd:h"), "error parsing address 'h'");
  EXPECT_EQ(legacy("nbd:h:"), "error parsing address 'h:'");
  EXPECT_EQ(legacy("nbd+unix:e?socket=/s"), "File name string for NBD must start with 'nbd:'");
}

TEST(NbdAddressTest, NamesItselfAsQemuDoes) {
  NbdAddress a;
  a.unix_path = "/s";
  EXPECT_EQ(a.uri(), "nbd+unix://?socket=/s");
  a.export_name = "my disk";
  EXPECT_EQ(a.uri(), "nbd+unix:///my disk?socket=/s");
  NbdAddress t;
  t.host = "h";
  EXPECT_EQ(t.uri(), "nbd://h:10809");
  t.export_name = "e";
  EXPECT_EQ(t.uri(), "nbd://h:10809/e");
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
