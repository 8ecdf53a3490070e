// Declarative option checking for blockdev-style JSON objects, with QEMU's
// messages ("Parameter 'x' is missing", "Parameter 'x' is unexpected",
// "Invalid parameter type for 'x', expected: integer").
//
// Contract: validate_options() checks presence and JSON types only; drivers
// check values themselves. Names of nested members are reported dotted
// ("file.filename").
// Thread rules: pure functions.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "strata/result.h"

namespace strata {

using json = nlohmann::json;

enum class OptType {
  kString,
  kInt,
  kUint,
  kBool,
  kNumber,
  kObject,
  kArray,
  kChild,        // a node: inline options (object) or a node-name (string)
  kChildOrNull,  // kChild, or null for "none" (backing)
  kAny,
};

struct OptionSpec {
  std::string name;
  OptType type;
  bool required = false;
};

const char* opt_type_name(OptType t);
bool opt_type_matches(const json& v, OptType t);

// Checks `obj` (which must be a JSON object) against `spec`.
Result<void> validate_options(const json& obj, const std::vector<OptionSpec>& spec,
                              const std::string& prefix = "");

// Typed getters with defaults for already validated objects.
std::string opt_string(const json& obj, const char* name, const std::string& def = "");
int64_t opt_int(const json& obj, const char* name, int64_t def = 0);
bool opt_bool(const json& obj, const char* name, bool def = false);

// Parses "on"/"off"/"true"/"false"/"yes"/"no" for command-line style values.
bool parse_bool_word(const std::string& s, bool* out);
// Parses sizes with optional suffix (k, M, G, T, P, E; powers of 1024, also
// with a trailing "B"/"iB"), as qemu-img accepts them.
bool parse_size(const std::string& s, uint64_t* out);

}  // namespace strata
