// Fuzz target: blockdev-style options into Graph::co_add. Whatever the
// input, opening must answer with a node or a clean error and leave the
// graph consistent. Protocol drivers that touch the host (file) are left out.
#include <cstddef>
#include <cstdint>

#include "block/core/graph.h"
#include "strata/engine.h"

namespace {

bool touches_host(const nlohmann::json& j) {
  if (j.is_object()) {
    auto it = j.find("driver");
    if (it != j.end() && it->is_string() && *it == "file") return true;
    for (const auto& [k, v] : j.items()) {
      if (touches_host(v)) return true;
    }
  } else if (j.is_array()) {
    for (const auto& v : j) {
      if (touches_host(v)) return true;
    }
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto options = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (options.is_discarded() || touches_host(options)) return 0;
  strata::Engine engine;
  auto node = engine.run(engine.graph().co_add(options));
  if (node) {
    std::vector<uint8_t> buf(512);
    (void)engine.run((*node)->co_preadv(0, strata::IoVec(buf.data(), buf.size()), 0));
  } else if (node.error().message.empty()) {
    __builtin_trap();  // every refusal explains itself
  }
  engine.run(engine.co_close_all());
  if (!engine.graph().nodes().empty()) __builtin_trap();
  return 0;
}
