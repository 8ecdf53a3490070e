// JSON text exactly as qemu-img prints it (QEMU's JSON writer in pretty
// mode): four-space indentation, empty containers opened and closed on two
// lines, non-ASCII and control characters escaped as \uXXXX (upper-case
// hex), invalid UTF-8 as U+FFFD.
// Thread rules: pure function.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace strata::img {

std::string qemu_json_pretty(const nlohmann::ordered_json& value);

}  // namespace strata::img
