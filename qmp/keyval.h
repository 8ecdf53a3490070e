// QEMU's command-line "keyval" syntax (`driver=file,node-name=x,
// file.filename=/a,,b`) and its conversion to typed JSON by a schema type,
// as qemu-storage-daemon reads --blockdev, --export, --object, --nbd-server.
//
// Contract: parse_keyval() produces nested objects of strings: dotted keys
// nest, ",," is a literal comma, a first element without '=' is the value of
// `implied_key` (if given), and objects whose keys are all 0, 1, 2, ... become
// arrays. keyval_to_typed() walks a schema type and converts strings to the
// member types (integers, sizes with suffixes, on/off booleans, null for
// "null" in an alternate allowing it, alternates of object and string);
// members the type does not know are left alone for validation to report.
// Thread rules: pure functions.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "qmp/schema.h"
#include "strata/result.h"

namespace strata::qmp {

Result<nlohmann::json> parse_keyval(const std::string& text, const std::string& implied_key = "");
Result<nlohmann::json> keyval_to_typed(const Schema& schema, const std::string& type,
                                       nlohmann::json value, const std::string& path = "");

// "--blockdev" style argument: JSON if it starts with '{', keyval otherwise,
// converted to `type` and validated against it.
Result<nlohmann::json> parse_option_argument(const Schema& schema, const std::string& type,
                                             const std::string& text,
                                             const std::string& implied_key = "");

}  // namespace strata::qmp
