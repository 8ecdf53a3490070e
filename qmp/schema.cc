// Schema declarations, validation with QEMU's messages, and introspection.
#include "qmp/schema.h"

#include <algorithm>
#include <cerrno>

namespace strata::qmp {

Error missing_parameter(const std::string& path) {
  return Error{EINVAL, "Parameter '" + path + "' is missing"};
}
Error unexpected_parameter(const std::string& path) {
  return Error{EINVAL, "Parameter '" + path + "' is unexpected"};
}
Error invalid_parameter_type(const std::string& path, const std::string& expected) {
  return Error{EINVAL, "Invalid parameter type for '" + path + "', expected: " + expected};
}
Error invalid_parameter_value(const std::string& name, const std::string& value) {
  return Error{EINVAL, "Parameter '" + name + "' does not accept value '" + value + "'"};
}

namespace {

TypeInfo builtin(const std::string& name, const std::string& json_type) {
  TypeInfo t;
  t.name = name;
  t.meta = MetaType::kBuiltin;
  t.json_type = json_type;
  return t;
}

std::string join(const std::string& path, const std::string& name) {
  return path.empty() ? name : path + "." + name;
}

bool builtin_matches(const std::string& json_type, const json& v) {
  if (json_type == "string") return v.is_string();
  if (json_type == "int") return v.is_number_integer();
  if (json_type == "number") return v.is_number();
  if (json_type == "boolean") return v.is_boolean();
  if (json_type == "null") return v.is_null();
  return true;  // "value"
}

// Which JSON type an alternate branch of type `t` takes (QEMU dispatches
// alternates on the JSON type of the value).
bool alternative_takes(const TypeInfo& t, const json& v) {
  switch (t.meta) {
    case MetaType::kBuiltin:
      return builtin_matches(t.json_type, v);
    case MetaType::kEnum:
      return v.is_string();
    case MetaType::kArray:
      return v.is_array();
    case MetaType::kObject:
      return v.is_object();
    case MetaType::kAlternate:
      return false;
  }
  return false;
}

}  // namespace

Schema::Schema() {
  for (const char* n : {"str"}) types_[n] = builtin(n, "string");
  for (const char* n :
       {"int", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "size"}) {
    types_[n] = builtin(n, "int");
  }
  types_["number"] = builtin("number", "number");
  types_["bool"] = builtin("bool", "boolean");
  types_["null"] = builtin("null", "null");
  types_["any"] = builtin("any", "value");
}

void Schema::add_enum(const std::string& name, std::vector<std::string> values) {
  TypeInfo t;
  t.name = name;
  t.meta = MetaType::kEnum;
  t.values = std::move(values);
  types_[name] = std::move(t);
}

void Schema::add_object(const std::string& name, std::vector<Member> members, std::string tag,
                        std::vector<Variant> variants) {
  TypeInfo t;
  t.name = name;
  t.meta = MetaType::kObject;
  t.members = std::move(members);
  t.tag = std::move(tag);
  t.variants = std::move(variants);
  types_[name] = std::move(t);
}

void Schema::add_alternate(const std::string& name, std::vector<std::string> alternatives) {
  TypeInfo t;
  t.name = name;
  t.meta = MetaType::kAlternate;
  t.alternatives = std::move(alternatives);
  types_[name] = std::move(t);
}

bool Schema::has(const std::string& name) const {
  return find(name) != nullptr;
}

const TypeInfo* Schema::find(const std::string& name) const {
  if (auto it = types_.find(name); it != types_.end()) return &it->second;
  if (name.size() > 2 && name.front() == '[' && name.back() == ']') {
    std::string element = name.substr(1, name.size() - 2);
    if (!find(element)) return nullptr;
    auto& slot = arrays_[name];
    slot.name = name;
    slot.meta = MetaType::kArray;
    slot.element = element;
    return &slot;
  }
  return nullptr;
}

std::string Schema::expected_name(const TypeInfo& t) {
  switch (t.meta) {
    case MetaType::kBuiltin:
      if (t.json_type == "string") return "string";
      if (t.json_type == "int") return "integer";
      if (t.json_type == "boolean") return "boolean";
      return t.json_type;
    case MetaType::kEnum:
      return "string";
    case MetaType::kArray:
      return "array";
    case MetaType::kObject:
      return "object";
    case MetaType::kAlternate:
      return t.name;
  }
  return "?";
}

Result<void> Schema::validate(const std::string& type, json& value, const std::string& path) const {
  const TypeInfo* t = find(type);
  if (!t) return Error{EINVAL, "internal error: unknown QMP type '" + type + "'"};
  std::string leaf = path;
  if (auto dot = leaf.rfind('.'); dot != std::string::npos) leaf = leaf.substr(dot + 1);
  return check(*t, value, path, leaf);
}

Result<void> Schema::validate_members(const std::vector<Member>& members, json& value,
                                      const std::string& path) const {
  if (!value.is_object())
    return invalid_parameter_type(path.empty() ? "arguments" : path, "object");
  std::vector<std::string> seen;
  STRATA_TRY(check_members(members, value, path, &seen));
  for (auto it = value.begin(); it != value.end(); ++it) {
    if (std::find(seen.begin(), seen.end(), it.key()) == seen.end()) {
      return unexpected_parameter(join(path, it.key()));
    }
  }
  return {};
}

Result<void> Schema::check(const TypeInfo& t, json& value, const std::string& path,
                           const std::string& leaf) const {
  switch (t.meta) {
    case MetaType::kBuiltin:
      if (builtin_matches(t.json_type, value)) return {};
      // QEMU's unsigned visitor (under every uintN) words it differently.
      if (t.name.starts_with("uint"))
        return Error{EINVAL, "Parameter '" + path + "' expects uint64"};
      return invalid_parameter_type(path, expected_name(t));
    case MetaType::kEnum: {
      if (!value.is_string()) return invalid_parameter_type(path, "string");
      const auto& s = value.get_ref<const std::string&>();
      if (std::find(t.values.begin(), t.values.end(), s) == t.values.end()) {
        return invalid_parameter_value(leaf.empty() ? "null" : leaf, s);
      }
      return {};
    }
    case MetaType::kArray: {
      if (!value.is_array()) return invalid_parameter_type(path, "array");
      const TypeInfo* element = find(t.element);
      for (size_t i = 0; i < value.size(); i++) {
        STRATA_TRY(check(*element, value[i], path + "[" + std::to_string(i) + "]", ""));
      }
      return {};
    }
    case MetaType::kObject:
      return check_object(t, value, path);
    case MetaType::kAlternate:
      return check_alternate(t, value, path, leaf);
  }
  return {};
}

Result<void> Schema::check_members(const std::vector<Member>& members, json& value,
                                   const std::string& path, std::vector<std::string>* seen) const {
  for (const auto& m : members) {
    seen->push_back(m.name);
    auto it = value.find(m.name);
    if (it == value.end()) {
      if (!m.optional) return missing_parameter(join(path, m.name));
      if (!m.default_value.is_null()) value[m.name] = m.default_value;
      continue;
    }
    const TypeInfo* mt = find(m.type);
    if (!mt) return Error{EINVAL, "internal error: unknown QMP type '" + m.type + "'"};
    STRATA_TRY(check(*mt, *it, join(path, m.name), m.name));
  }
  return {};
}

Result<void> Schema::check_object(const TypeInfo& t, json& value, const std::string& path) const {
  if (!value.is_object()) return invalid_parameter_type(path, "object");
  std::vector<std::string> seen;
  STRATA_TRY(check_members(t.members, value, path, &seen));
  if (!t.tag.empty()) {
    // The tag is a validated enum member, so a branch exists unless the
    // enum has values without a branch (those take no extra members).
    const std::string& tag_value = value[t.tag].get_ref<const std::string&>();
    for (const auto& v : t.variants) {
      if (v.tag_value != tag_value) continue;
      const TypeInfo* branch = find(v.type);
      if (!branch) return Error{EINVAL, "internal error: unknown QMP type '" + v.type + "'"};
      STRATA_TRY(check_members(branch->members, value, path, &seen));
      break;
    }
  }
  for (auto it = value.begin(); it != value.end(); ++it) {
    if (std::find(seen.begin(), seen.end(), it.key()) == seen.end()) {
      return unexpected_parameter(join(path, it.key()));
    }
  }
  return {};
}

Result<void> Schema::check_alternate(const TypeInfo& t, json& value, const std::string& path,
                                     const std::string& leaf) const {
  for (const auto& name : t.alternatives) {
    const TypeInfo* alt = find(name);
    if (alt && alternative_takes(*alt, value)) return check(*alt, value, path, leaf);
  }
  // QEMU's generated alternate visitors name the member alone.
  return invalid_parameter_type(leaf.empty() ? "null" : leaf, t.name);
}

// Introspection.

void Schema::Introspector::add_command(const std::string& name, const std::string& arg_type,
                                       const std::string& ret_type, bool allow_oob) {
  json e = {{"name", name},
            {"meta-type", "command"},
            {"arg-type", ref(arg_type)},
            {"ret-type", ref(ret_type)}};
  if (allow_oob) e["allow-oob"] = true;
  entries_.push_back(std::move(e));
}

void Schema::Introspector::add_event(const std::string& name, const std::string& arg_type) {
  entries_.push_back({{"name", name}, {"meta-type", "event"}, {"arg-type", ref(arg_type)}});
}

std::string Schema::Introspector::ref(const std::string& type) {
  if (auto it = wire_names_.find(type); it != wire_names_.end()) return it->second;
  const TypeInfo* t = schema_.find(type);
  std::string wire;
  if (t && t->meta == MetaType::kBuiltin) {
    // Integer aliases are all "int" on the wire.
    wire = t->json_type == "int" ? "int" : type;
  } else if (t && t->meta == MetaType::kArray) {
    wire = "[" + ref(t->element) + "]";
  } else {
    wire = std::to_string(next_number_++);
  }
  wire_names_[type] = wire;
  pending_.push_back(type);
  return wire;
}

json Schema::Introspector::render(const TypeInfo& t, const std::string& wire_name) {
  json e = {{"name", wire_name}};
  switch (t.meta) {
    case MetaType::kBuiltin:
      e["meta-type"] = "builtin";
      e["json-type"] = t.json_type;
      break;
    case MetaType::kEnum: {
      e["meta-type"] = "enum";
      e["values"] = t.values;
      json members = json::array();
      for (const auto& v : t.values) members.push_back({{"name", v}});
      e["members"] = std::move(members);
      break;
    }
    case MetaType::kArray:
      e["meta-type"] = "array";
      e["element-type"] = ref(t.element);
      break;
    case MetaType::kObject: {
      e["meta-type"] = "object";
      json members = json::array();
      for (const auto& m : t.members) {
        json jm = {{"name", m.name}, {"type", ref(m.type)}};
        if (m.optional) jm["default"] = nullptr;
        members.push_back(std::move(jm));
      }
      e["members"] = std::move(members);
      if (!t.tag.empty()) {
        e["tag"] = t.tag;
        json variants = json::array();
        for (const auto& v : t.variants) {
          variants.push_back({{"case", v.tag_value}, {"type", ref(v.type)}});
        }
        e["variants"] = std::move(variants);
      }
      break;
    }
    case MetaType::kAlternate: {
      e["meta-type"] = "alternate";
      json members = json::array();
      for (const auto& a : t.alternatives) members.push_back({{"type", ref(a)}});
      e["members"] = std::move(members);
      break;
    }
  }
  return e;
}

json Schema::Introspector::finish() {
  std::vector<std::string> done_wire;
  for (size_t i = 0; i < pending_.size(); i++) {
    std::string type = pending_[i];
    const TypeInfo* t = schema_.find(type);
    if (!t) continue;
    std::string wire = wire_names_[type];
    // Integer aliases share the wire name "int": render it once.
    if (std::find(done_wire.begin(), done_wire.end(), wire) != done_wire.end()) continue;
    done_wire.push_back(wire);
    json e = render(*t, wire);
    if (t->meta == MetaType::kBuiltin && wire == "int") e["json-type"] = "int";
    entries_.push_back(std::move(e));
  }
  return std::move(entries_);
}

}  // namespace strata::qmp
