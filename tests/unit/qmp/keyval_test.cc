// QEMU keyval syntax and conversion by schema types.
#include "qmp/keyval.h"

#include <gtest/gtest.h>

namespace strata::qmp {
namespace {

TEST(Keyval, ParsesNestingCommasImpliedKeysAndLists) {
  auto v = parse_keyval("file,node-name=a,file.filename=/x,,y,list.0=p,list.1=q", "driver");
  ASSERT_TRUE(v) << v.error().message;
  EXPECT_EQ((*v)["driver"], "file");
  EXPECT_EQ((*v)["file"]["filename"], "/x,y");
  EXPECT_EQ((*v)["list"], (json{"p", "q"}));
  EXPECT_FALSE(parse_keyval("a=1,b", ""));
  EXPECT_FALSE(parse_keyval("a=1,a.b=2", ""));
}

TEST(Keyval, ConvertsBySchemaType) {
  Schema s;
  s.add_object("Opts", {{"size", "size"},
                        {"count", "int", true},
                        {"on", "bool", true},
                        {"child", "Ref", true},
                        {"back", "RefOrNull", true}});
  s.add_alternate("Ref", {"Opts", "str"});
  s.add_alternate("RefOrNull", {"Opts", "str", "null"});
  auto v = parse_option_argument(s, "Opts",
                                 "size=64k,count=-3,on=on,child.size=1M,child.on=off,back=null");
  ASSERT_TRUE(v) << v.error().message;
  EXPECT_EQ((*v)["size"], 65536);
  EXPECT_EQ((*v)["count"], -3);
  EXPECT_EQ((*v)["on"], true);
  EXPECT_EQ((*v)["child"]["size"], 1 << 20);
  EXPECT_EQ((*v)["child"]["on"], false);
  EXPECT_TRUE((*v)["back"].is_null());
  auto named = parse_option_argument(s, "Opts", "size=1,child=node0");
  ASSERT_TRUE(named);
  EXPECT_EQ((*named)["child"], "node0");
  EXPECT_EQ(parse_option_argument(s, "Opts", "size=1,count=x").error().message,
            "Parameter 'count' expects integer");
  EXPECT_EQ(parse_option_argument(s, "Opts", "size=1,on=maybe").error().message,
            "Parameter 'on' expects 'on' or 'off'");
  EXPECT_EQ(parse_option_argument(s, "Opts", "size=1,zz=1").error().message,
            "Parameter 'zz' is unexpected");
  auto j = parse_option_argument(s, "Opts", R"({"size": 5, "on": true})");
  ASSERT_TRUE(j);
  EXPECT_EQ((*j)["size"], 5);
}

}  // namespace
}  // namespace strata::qmp
