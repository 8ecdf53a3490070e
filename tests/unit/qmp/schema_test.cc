// Generic argument validation (QEMU's messages), defaults and introspection.
#include "qmp/schema.h"

#include <gtest/gtest.h>

namespace strata::qmp {
namespace {

class SchemaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    s.add_enum("Mode", {"safe", "hard"});
    s.add_object("Inner", {{"name", "str"}, {"level", "int", true}});
    s.add_object("Branch-a", {{"a-only", "bool"}});
    s.add_enum("Kind", {"a", "b"});
    s.add_object("Union", {{"kind", "Kind"}, {"common", "str", true}}, "kind", {{"a", "Branch-a"}});
    s.add_alternate("Ref", {"Inner", "str"});
    args = {{"device", "str", true},   {"size", "int"},          {"mode", "Mode", true, "safe"},
            {"list", "[Inner]", true}, {"ref", "Ref", true},     {"u", "Union", true},
            {"flag", "bool", true},    {"count", "uint64", true}};
  }
  std::string error(json v) {
    auto r = s.validate_members(args, v);
    return r ? "" : r.error().message;
  }
  Schema s;
  std::vector<Member> args;
};

TEST_F(SchemaTest, AcceptsValidArgumentsAndFillsDefaults) {
  json v = {{"size", 5}, {"list", {{{"name", "x"}}}}, {"ref", "node"}};
  ASSERT_TRUE(s.validate_members(args, v));
  EXPECT_EQ(v["mode"], "safe");
  EXPECT_FALSE(v.contains("device"));
}

TEST_F(SchemaTest, QemuMessages) {
  EXPECT_EQ(error(json::object()), "Parameter 'size' is missing");
  EXPECT_EQ(error({{"size", "1"}}), "Invalid parameter type for 'size', expected: integer");
  EXPECT_EQ(error({{"size", 1}, {"x", 1}}), "Parameter 'x' is unexpected");
  EXPECT_EQ(error({{"size", 1}, {"device", nullptr}}),
            "Invalid parameter type for 'device', expected: string");
  EXPECT_EQ(error({{"size", 1}, {"flag", 1}}),
            "Invalid parameter type for 'flag', expected: boolean");
  EXPECT_EQ(error({{"size", 1}, {"mode", "soft"}}),
            "Parameter 'mode' does not accept value 'soft'");
  EXPECT_EQ(error({{"size", 1}, {"list", {1}}}),
            "Invalid parameter type for 'list[0]', expected: object");
  EXPECT_EQ(error({{"size", 1}, {"list", {{{"level", 1}}}}}),
            "Parameter 'list[0].name' is missing");
  EXPECT_EQ(error({{"size", 1}, {"list", {{{"name", "n"}, {"zz", 1}}}}}),
            "Parameter 'list[0].zz' is unexpected");
  EXPECT_EQ(error({{"size", 1}, {"ref", 5}}), "Invalid parameter type for 'ref', expected: Ref");
  EXPECT_EQ(error({{"size", 1}, {"ref", {{"name", 1}}}}),
            "Invalid parameter type for 'ref.name', expected: string");
  // Unsigned integers: QEMU's own wording; negative values are accepted.
  EXPECT_EQ(error({{"size", 1}, {"count", "5"}}), "Parameter 'count' expects uint64");
  EXPECT_EQ(error({{"size", 1}, {"count", 1.5}}), "Parameter 'count' expects uint64");
  EXPECT_EQ(error({{"size", 1}, {"count", -1}}), "");
}

TEST_F(SchemaTest, FlatUnions) {
  EXPECT_EQ(error({{"size", 1}, {"u", {{"kind", "a"}}}}), "Parameter 'u.a-only' is missing");
  EXPECT_EQ(error({{"size", 1}, {"u", {{"kind", "c"}}}}),
            "Parameter 'kind' does not accept value 'c'");
  EXPECT_EQ(error({{"size", 1}, {"u", {{"kind", "b"}, {"a-only", true}}}}),
            "Parameter 'u.a-only' is unexpected");
  EXPECT_EQ(error({{"size", 1}, {"u", {{"kind", "a"}, {"a-only", true}, {"common", "c"}}}}), "");
  EXPECT_EQ(error({{"size", 1}, {"u", {{"common", "c"}}}}), "Parameter 'u.kind' is missing");
}

TEST_F(SchemaTest, IntrospectionUsesQemuShapes) {
  s.add_object("Args", args);
  Schema::Introspector in(s);
  in.add_command("cmd", "Args", "[Inner]");
  json out = in.finish();
  std::map<std::string, json> by_name;
  for (auto& e : out) by_name[e["name"]] = e;
  const json& cmd = by_name["cmd"];
  EXPECT_EQ(cmd["meta-type"], "command");
  const json& a = by_name[cmd["arg-type"].get<std::string>()];
  EXPECT_EQ(a["meta-type"], "object");
  EXPECT_EQ(a["members"][0], (json{{"name", "device"}, {"type", "str"}, {"default", nullptr}}));
  EXPECT_EQ(a["members"][1], (json{{"name", "size"}, {"type", "int"}}));
  const json& ret = by_name[cmd["ret-type"].get<std::string>()];
  EXPECT_EQ(ret["meta-type"], "array");
  const json& mode = by_name[a["members"][2]["type"].get<std::string>()];
  EXPECT_EQ(mode["values"], (json{"safe", "hard"}));
  const json& u = by_name[a["members"][5]["type"].get<std::string>()];
  EXPECT_EQ(u["tag"], "kind");
  EXPECT_EQ(u["variants"][0]["case"], "a");
  const json& ref = by_name[a["members"][4]["type"].get<std::string>()];
  EXPECT_EQ(ref["meta-type"], "alternate");
  for (auto& e : out) {
    for (const char* key : {"arg-type", "ret-type", "element-type"}) {
      if (e.contains(key)) {
        EXPECT_TRUE(by_name.count(e[key].get<std::string>())) << e.dump();
      }
    }
  }
  EXPECT_EQ(by_name["int"]["json-type"], "int");
}

}  // namespace
}  // namespace strata::qmp
