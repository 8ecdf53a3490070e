// Replays the QMP fuzz target over a seed corpus and deterministic
// mutations of it, so the fuzz target runs (quickly) with every test run.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "tests/fuzz/qmp_fuzz_target.h"

namespace strata::qmp {
namespace {

const std::vector<std::string>& seeds() {
  static const std::vector<std::string> s = {
      R"({"execute":"qmp_capabilities"}{"execute":"query-version","id":1})",
      R"({"execute":"qmp_capabilities"}{"execute":"query-named-block-nodes","arguments":{"flat":true}})",
      R"({"execute":"qmp_capabilities"}{"execute":"transaction","arguments":{"actions":[{"type":"abort","data":{}},{"type":"blockdev-snapshot","data":{"node":"a","overlay":"b"}}],"properties":{"completion-mode":"grouped"}}})",
      R"({"execute":"qmp_capabilities"}{"execute":"blockdev-add","arguments":{"driver":"raw","node-name":"r","file":{"driver":"file","filename":"x","cache":{"direct":true}}}})",
      R"({"execute":"qmp_capabilities"}{"execute":"block_resize","arguments":{"node-name":"x","size":-1}})",
      R"({"execute":"qmp_capabilities"}{"execute":"query-qmp-schema"}{"execute":"query-commands"})",
      R"({'execute':'qmp_capabilities'}{'execute':'blockdev-del','arguments':{'node-name':'it\'s'}})",
      "{\"execute\": }\x01[1,2]\"s\" 42 abc {\"a\":[[[[[]]]]]}\xff",
      R"({"exec-oob":"query-version","id":{"a":[1,2.5e300,null,true]}})",
      R"({"execute":"qmp_capabilities","arguments":{"enable":["oob","x"]}})",
      R"({"execute":"qmp_capabilities"}{"execute":"blockdev-reopen","arguments":{"options":[{"driver":"null-co","node-name":"n"}]}})",
      "{\"execute\":\"query-block\",\"id\":"
      "\"\xc0\xaf\xed\xa0\x80\\u0000\xc0\x80\\ud800\\u12\xe2\x82\"}"
      "{\"a\":\"\x01\"} , {\"k\":1,\"k\":2}\n\xfe",
  };
  return s;
}

std::string mutate(std::string s, std::mt19937& rng) {
  static const char kBytes[] =
      "{}[]\"':,\\ 0123456789-.eEtrufalsnu\x01\xff\xc3\xc0\x80\xed\xa0\xf4";
  int edits = 1 + static_cast<int>(rng() % 8);
  for (int i = 0; i < edits; i++) {
    size_t pos = s.empty() ? 0 : rng() % s.size();
    switch (rng() % 4) {
      case 0:
        if (!s.empty()) s.erase(pos, 1 + rng() % 4);
        break;
      case 1:
        s.insert(s.begin() + pos, kBytes[rng() % (sizeof(kBytes) - 1)]);
        break;
      case 2:
        if (!s.empty()) s[pos] = kBytes[rng() % (sizeof(kBytes) - 1)];
        break;
      default: {
        const std::string& other = seeds()[rng() % seeds().size()];
        size_t from = rng() % other.size();
        s.insert(pos, other.substr(from, rng() % 40));
      }
    }
  }
  return s;
}

TEST(QmpFuzzReplay, SeedsAndMutations) {
  fuzz::Harness harness;
  std::mt19937 rng(20261122);
  for (const auto& seed : seeds()) {
    harness.run_one(reinterpret_cast<const uint8_t*>(seed.data()), seed.size());
  }
  for (int i = 0; i < 3000; i++) {
    std::string input = mutate(seeds()[rng() % seeds().size()], rng);
    harness.run_one(reinterpret_cast<const uint8_t*>(input.data()), input.size());
  }
}

}  // namespace
}  // namespace strata::qmp
