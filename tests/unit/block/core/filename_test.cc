#include "block/core/filename.h"

#include <gtest/gtest.h>

#include <fstream>

#include "block/core/graph.h"
#include "strata/engine.h"
#include "unit/block/drivers/temp_dir.h"

namespace strata {
namespace {

using nlohmann::json;

class FilenameTest : public ::testing::Test {
 protected:
  json node(const std::string& name) {
    auto r = filename_node_options(engine_.graph().drivers(), name);
    EXPECT_TRUE(r) << name << ": " << (r ? "" : r.error().message);
    return r ? *r : json();
  }
  std::string error(const std::string& name) {
    auto r = filename_node_options(engine_.graph().drivers(), name);
    return r ? "ok" : r.error().message;
  }
  Result<json> image(const std::string& name, const std::string& format) {
    return engine_.run(
        co_filename_options(engine_.loop(), engine_.graph().drivers(), name, format));
  }
  Engine engine_;
};

// Each case as QEMU 7.2's bdrv_open makes it (checked with qemu-img info).
TEST_F(FilenameTest, ProtocolsAsQemuFindsThem) {
  EXPECT_EQ(node("disk.qcow2"), (json{{"driver", "file"}, {"filename", "disk.qcow2"}}));
  EXPECT_EQ(node("/a/b:c"), (json{{"driver", "file"}, {"filename", "/a/b:c"}}));
  EXPECT_EQ(node("./a:b"), (json{{"driver", "file"}, {"filename", "./a:b"}}));
  EXPECT_EQ(node("file:a:b"), (json{{"driver", "file"}, {"filename", "a:b"}}));
  EXPECT_EQ(node("nbd://h:10810/e"),
            (json{{"driver", "nbd"},
                  {"export", "e"},
                  {"server", {{"type", "inet"}, {"host", "h"}, {"port", "10810"}}}}));
  EXPECT_EQ(node("nbd+unix:///e?socket=/s")["server"], (json{{"type", "unix"}, {"path", "/s"}}));
  EXPECT_EQ(node("nbd:unix:/s:exportname=x")["export"], "x");
  EXPECT_EQ(node("null-co://"), (json{{"driver", "null-co"}}));
  EXPECT_EQ(error("a:b"), "Unknown protocol 'a'");
  EXPECT_EQ(error("NBD://h/e"), "Unknown protocol 'NBD'");
  EXPECT_EQ(error("null-co://x"), "The only allowed filename for this driver is 'null-co://'");
  EXPECT_EQ(error("nbd://h/e x"), "No valid URL specified");
}

TEST_F(FilenameTest, JsonPseudoProtocol) {
  json expect = {{"driver", "qcow2"}, {"file", {{"driver", "file"}, {"filename", "t.qcow2"}}}};
  EXPECT_EQ(node(R"(json:{"driver":"qcow2","file":{"driver":"file","filename":"t.qcow2"}})"),
            expect);
  EXPECT_EQ(node(R"(json:{"driver":"qcow2","file.driver":"file","file.filename":"t.qcow2"})"),
            expect);
  // A file child named by its file name alone is a file node.
  EXPECT_EQ(node(R"(json:{"driver":"qcow2","file.filename":"t.qcow2"})"), expect);
  EXPECT_EQ(node(R"(json:{"driver":"qcow2","file":{"filename":"t.qcow2"}})"), expect);
  EXPECT_EQ(error("json:[1]"), "Invalid JSON object given");
  // (QEMU's parser words the reason "JSON parse error, invalid keyword 'bad'".)
  EXPECT_EQ(error("json:{bad").rfind("Could not parse the JSON options: ", 0), 0u);
  EXPECT_EQ(error(R"(json:{"file":"x","file.filename":"y"})"), "Invalid JSON object given");
}

TEST_F(FilenameTest, FormatsAboveTheProtocolNode) {
  auto r = image("nbd://h/e", "raw");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ((*r)["driver"], "raw");
  EXPECT_EQ((*r)["file"]["driver"], "nbd");
  // Without a format, anything but a local file is raw (no probe over NBD).
  r = image("nbd+unix:///e?socket=/s", "");
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["driver"], "raw");
  // A format naming a protocol driver opens it directly; "file" does not
  // parse protocol prefixes.
  r = image("nbd://h/e", "nbd");
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["driver"], "nbd");
  EXPECT_EQ((*r)["export"], "e");
  r = image("nbd://h/e", "file");
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, (json{{"driver", "file"}, {"filename", "nbd://h/e"}}));
  // json: takes the given format over its own driver; without either it
  // needs a file to probe.
  r = image(R"(json:{"driver":"qcow2","file":{"driver":"null-co"}})", "raw");
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["driver"], "raw");
  r = image(R"(json:{"file":{"driver":"null-co"}})", "");
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["driver"], "raw");
  r = image(R"(json:{"filename":"x"})", "");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message, "Must specify either driver or file");
}

TEST_F(FilenameTest, ProbesLocalFiles) {
  testing::TempDir dir;
  std::string path = dir.file("img");
  // QEMU's rule: the qcow2 magic and a version of 2 or more.
  std::ofstream(path) << "QFI\xfb" << std::string(3, '\0') << '\x03' << std::string(100, '\0');
  auto r = image(path, "");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ((*r)["driver"], "qcow2");
  EXPECT_EQ((*r)["file"], (json{{"driver", "file"}, {"filename", path}}));
  r = image(dir.file("missing"), "");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ENOENT);
}

TEST_F(FilenameTest, BackingFileNamesAsQemuResolvesThem) {
  auto b = [](const std::string& overlay, const std::string& backing) {
    auto r = backing_filename(overlay, backing);
    return r ? *r : "error: " + r.error().message;
  };
  EXPECT_EQ(b("dir/top.qcow2", "base.qcow2"), "dir/base.qcow2");
  EXPECT_EQ(b("top.qcow2", "base.qcow2"), "base.qcow2");
  EXPECT_EQ(b("/d/top.qcow2", "../b/base"), "/d/../b/base");
  EXPECT_EQ(b("dir/top.qcow2", "/abs/base"), "/abs/base");
  EXPECT_EQ(b("dir/top.qcow2", "nbd://h/e"), "nbd://h/e");
  EXPECT_EQ(b("dir/top.qcow2", "nbd+unix:///e?socket=/s"), "nbd+unix:///e?socket=/s");
  EXPECT_EQ(b("dir/top.qcow2", "json:{\"driver\":\"raw\"}"), "json:{\"driver\":\"raw\"}");
  EXPECT_EQ(b("dir/top.qcow2", ""), "");
  // An overlay reached over NBD keeps its URI's "directory" (path_combine).
  EXPECT_EQ(b("nbd://h:10809/top", "base"), "nbd://h:10809/base");
  EXPECT_EQ(b("file:top.qcow2", "base"), "file:base");
  EXPECT_EQ(b("json:{}", "base"), "error: Cannot use relative backing file names for 'json:{}'");
}

}  // namespace
}  // namespace strata
