#include "block/core/options.h"

#include <cctype>
#include <cmath>
#include <set>

namespace strata {

const char* opt_type_name(OptType t) {
  switch (t) {
    case OptType::kString: return "string";
    case OptType::kInt: return "integer";
    case OptType::kUint: return "integer";
    case OptType::kBool: return "boolean";
    case OptType::kNumber: return "number";
    case OptType::kObject: return "object";
    case OptType::kArray: return "array";
    case OptType::kChild: return "BlockdevRef";
    case OptType::kChildOrNull: return "BlockdevRefOrNull";
    case OptType::kAny: return "any";
  }
  return "?";
}

bool opt_type_matches(const json& v, OptType t) {
  switch (t) {
    case OptType::kString: return v.is_string();
    case OptType::kInt: return v.is_number_integer();
    case OptType::kUint: return v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0);
    case OptType::kBool: return v.is_boolean();
    case OptType::kNumber: return v.is_number();
    case OptType::kObject: return v.is_object();
    case OptType::kArray: return v.is_array();
    case OptType::kChild: return v.is_object() || v.is_string();
    case OptType::kChildOrNull: return v.is_object() || v.is_string() || v.is_null();
    case OptType::kAny: return true;
  }
  return false;
}

Result<void> validate_options(const json& obj, const std::vector<OptionSpec>& spec,
                              const std::string& prefix) {
  if (!obj.is_object()) {
    std::string name = prefix.empty() ? "options" : prefix.substr(0, prefix.size() - 1);
    return Error{EINVAL, "Invalid parameter type for '" + name + "', expected: object"};
  }
  std::set<std::string> known;
  for (const auto& o : spec) {
    known.insert(o.name);
    auto it = obj.find(o.name);
    if (it == obj.end()) {
      if (o.required) return Error{EINVAL, "Parameter '" + prefix + o.name + "' is missing"};
      continue;
    }
    if (!opt_type_matches(*it, o.type)) {
      return Error{EINVAL, "Invalid parameter type for '" + prefix + o.name +
                               "', expected: " + opt_type_name(o.type)};
    }
  }
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    if (!known.count(it.key())) {
      return Error{EINVAL, "Parameter '" + prefix + it.key() + "' is unexpected"};
    }
  }
  return {};
}

std::string opt_string(const json& obj, const char* name, const std::string& def) {
  auto it = obj.find(name);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : def;
}

int64_t opt_int(const json& obj, const char* name, int64_t def) {
  auto it = obj.find(name);
  return it != obj.end() && it->is_number_integer() ? it->get<int64_t>() : def;
}

bool opt_bool(const json& obj, const char* name, bool def) {
  auto it = obj.find(name);
  return it != obj.end() && it->is_boolean() ? it->get<bool>() : def;
}

bool parse_bool_word(const std::string& s, bool* out) {
  if (s == "on" || s == "true" || s == "yes") {
    *out = true;
  } else if (s == "off" || s == "false" || s == "no") {
    *out = false;
  } else {
    return false;
  }
  return true;
}

bool parse_size(const std::string& s, uint64_t* out) {
  if (s.empty() || !std::isdigit(static_cast<unsigned char>(s[0]))) return false;
  size_t pos = 0;
  long double value;
  try {
    value = std::stold(s, &pos);
  } catch (...) {
    return false;
  }
  std::string suffix = s.substr(pos);
  if (suffix == "iB" || suffix == "B") suffix.clear();
  if (suffix.size() >= 2 && (suffix.substr(1) == "iB" || suffix.substr(1) == "B")) {
    suffix = suffix.substr(0, 1);
  }
  int shift = 0;
  if (suffix.empty()) {
    shift = 0;
  } else if (suffix.size() == 1) {
    switch (std::tolower(static_cast<unsigned char>(suffix[0]))) {
      case 'b': shift = 0; break;
      case 'k': shift = 10; break;
      case 'm': shift = 20; break;
      case 'g': shift = 30; break;
      case 't': shift = 40; break;
      case 'p': shift = 50; break;
      case 'e': shift = 60; break;
      default: return false;
    }
  } else {
    return false;
  }
  long double bytes = std::ldexp(value, shift);
  if (bytes < 0 || bytes >= 18446744073709551615.0L) return false;
  if (suffix.empty() && s.find('.') != std::string::npos) return false;
  *out = static_cast<uint64_t>(bytes);
  return true;
}

}  // namespace strata
