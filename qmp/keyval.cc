// keyval parsing and schema-driven conversion.
#include "qmp/keyval.h"

#include <cerrno>
#include <cstdlib>

#include "block/core/options.h"
#include "qmp/json_stream.h"

namespace strata::qmp {

using nlohmann::json;

namespace {

// Splits "a=b,c=d,,e" into elements, honouring ",," as a literal comma.
std::vector<std::string> split_elements(const std::string& text) {
  std::vector<std::string> out(1);
  for (size_t i = 0; i < text.size(); i++) {
    if (text[i] == ',') {
      if (i + 1 < text.size() && text[i + 1] == ',') {
        out.back().push_back(',');
        i++;
      } else {
        out.emplace_back();
      }
    } else {
      out.back().push_back(text[i]);
    }
  }
  return out;
}

Result<void> put(json& root, const std::string& key, const std::string& value) {
  if (key.empty()) return Error{EINVAL, "Invalid parameter ''"};
  json* cur = &root;
  size_t start = 0;
  for (;;) {
    size_t dot = key.find('.', start);
    std::string part =
        key.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (part.empty()) return Error{EINVAL, "Invalid parameter '" + key + "'"};
    if (dot == std::string::npos) {
      if (cur->contains(part)) {
        if ((*cur)[part].is_object()) {
          return Error{EINVAL, "Parameters '" + key + ".*' used inconsistently"};
        }
      }
      (*cur)[part] = value;
      return {};
    }
    json& next = (*cur)[part];
    if (next.is_null()) next = json::object();
    if (!next.is_object()) {
      return Error{EINVAL, "Parameters '" + key.substr(0, dot) + "' used inconsistently"};
    }
    cur = &next;
    start = dot + 1;
  }
}

bool all_indices(const json& obj) {
  if (!obj.is_object() || obj.empty()) return false;
  for (size_t i = 0; i < obj.size(); i++) {
    if (!obj.contains(std::to_string(i))) return false;
  }
  return true;
}

// Objects keyed 0..n-1 become arrays, recursively.
json listify(json v) {
  if (!v.is_object()) return v;
  for (auto it = v.begin(); it != v.end(); ++it) it.value() = listify(std::move(it.value()));
  if (!all_indices(v)) return v;
  json arr = json::array();
  for (size_t i = 0; i < v.size(); i++) arr.push_back(std::move(v[std::to_string(i)]));
  return arr;
}

std::string join(const std::string& path, const std::string& name) {
  return path.empty() ? name : path + "." + name;
}

Result<json> convert_scalar(const TypeInfo& t, const std::string& s, const std::string& path) {
  const std::string& jt = t.json_type;
  if (jt == "string" || jt == "value") return json(s);
  if (jt == "boolean") {
    bool b = false;
    if (!parse_bool_word(s, &b)) {
      return Error{EINVAL, "Parameter '" + path + "' expects 'on' or 'off'"};
    }
    return json(b);
  }
  if (jt == "int") {
    if (t.name == "size") {
      uint64_t v = 0;
      if (!parse_size(s, &v)) return Error{EINVAL, "Parameter '" + path + "' expects a size"};
      return json(v);
    }
    errno = 0;
    char* end = nullptr;
    long long v = std::strtoll(s.c_str(), &end, 0);
    if (s.empty() || *end || errno) {
      return Error{EINVAL, "Parameter '" + path + "' expects integer"};
    }
    return json(static_cast<int64_t>(v));
  }
  if (jt == "number") {
    char* end = nullptr;
    double d = std::strtod(s.c_str(), &end);
    if (s.empty() || *end) return Error{EINVAL, "Parameter '" + path + "' expects number"};
    return json(d);
  }
  if (jt == "null") {
    if (s == "null" || s.empty()) return json(nullptr);
    return Error{EINVAL, "Parameter '" + path + "' expects null"};
  }
  return json(s);
}

}  // namespace

Result<json> parse_keyval(const std::string& text, const std::string& implied_key) {
  json root = json::object();
  auto elements = split_elements(text);
  for (size_t i = 0; i < elements.size(); i++) {
    const std::string& e = elements[i];
    if (e.empty() && i + 1 == elements.size() && i > 0) break;  // trailing comma
    size_t eq = e.find('=');
    if (eq == std::string::npos) {
      if (i == 0 && !implied_key.empty()) {
        STRATA_TRY(put(root, implied_key, e));
        continue;
      }
      return Error{EINVAL, "Expected '=' after parameter '" + e + "'"};
    }
    STRATA_TRY(put(root, e.substr(0, eq), e.substr(eq + 1)));
  }
  return listify(std::move(root));
}

Result<json> keyval_to_typed(const Schema& schema, const std::string& type, json value,
                             const std::string& path) {
  const TypeInfo* t = schema.find(type);
  if (!t) return value;
  switch (t->meta) {
    case MetaType::kBuiltin:
      if (value.is_string()) return convert_scalar(*t, value.get<std::string>(), path);
      return value;
    case MetaType::kEnum:
      return value;
    case MetaType::kArray:
      if (!value.is_array()) return value;
      for (size_t i = 0; i < value.size(); i++) {
        STRATA_TRY_ASSIGN(value[i], keyval_to_typed(schema, t->element, std::move(value[i]),
                                                    path + "[" + std::to_string(i) + "]"));
      }
      return value;
    case MetaType::kAlternate:
      for (const auto& alt : t->alternatives) {
        const TypeInfo* a = schema.find(alt);
        if (!a) continue;
        bool takes = (value.is_object() && a->meta == MetaType::kObject) ||
                     (value.is_string() && value == "null" && a->name == "null") ||
                     (value.is_string() && value != "null" && a->meta != MetaType::kObject &&
                      a->name != "null");
        if (takes) return keyval_to_typed(schema, alt, std::move(value), path);
      }
      return value;
    case MetaType::kObject:
      break;
  }
  if (!value.is_object()) return value;
  std::vector<const Member*> members;
  for (const auto& m : t->members) members.push_back(&m);
  if (!t->tag.empty() && value.contains(t->tag) && value[t->tag].is_string()) {
    for (const auto& v : t->variants) {
      if (v.tag_value != value[t->tag]) continue;
      if (const TypeInfo* branch = schema.find(v.type)) {
        for (const auto& m : branch->members) members.push_back(&m);
      }
    }
  }
  for (const Member* m : members) {
    auto it = value.find(m->name);
    if (it == value.end()) continue;
    STRATA_TRY_ASSIGN(*it, keyval_to_typed(schema, m->type, std::move(*it), join(path, m->name)));
  }
  return value;
}

Result<json> parse_option_argument(const Schema& schema, const std::string& type,
                                   const std::string& text, const std::string& implied_key) {
  json value;
  if (!text.empty() && text[0] == '{') {
    std::string error;
    auto parsed = parse_qmp_json(text, &error);
    if (!parsed) return Error{EINVAL, "JSON parse error, " + error};
    value = std::move(*parsed);
  } else {
    STRATA_TRY_ASSIGN(json strings, parse_keyval(text, implied_key));
    STRATA_TRY_ASSIGN(value, keyval_to_typed(schema, type, std::move(strings)));
  }
  STRATA_TRY(schema.validate(type, value, ""));
  return value;
}

}  // namespace strata::qmp
