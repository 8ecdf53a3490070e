// Schema: the QAPI-style type system behind QMP commands. Commands and
// transaction actions declare their arguments as members with types from a
// Schema; validate() checks a JSON value against a type before any handler
// runs, with QEMU's exact messages, and introspect() renders the types in
// QEMU's query-qmp-schema format (SchemaInfo).
//
// Type names: builtins are "str", "int", "bool", "number", "null", "any"
// (plus integer aliases "int64", "uint64", "uint32", "size", ...); "[T]" is
// an array of T; other names are declared with add_enum / add_object /
// add_alternate. An object may be a flat union: a `tag` member (an enum)
// picks one variant object whose members are merged into the base.
//
// Contract: types must be declared before a value is validated against them;
// redeclaring a name replaces it. Validation fills in declared defaults of
// absent optional members (Member::default_value, when not null).
// Thread rules: none; a plain object, read-only once serving starts.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "strata/result.h"

namespace strata::qmp {

using nlohmann::json;

struct Member {
  std::string name;
  std::string type;
  bool optional = false;
  json default_value = nullptr;  // filled in when absent (null: none)
};

struct Variant {
  std::string tag_value;
  std::string type;  // an object type
};

enum class MetaType { kBuiltin, kEnum, kArray, kObject, kAlternate };

struct TypeInfo {
  std::string name;
  MetaType meta = MetaType::kObject;
  std::string json_type;                  // builtin: "string", "int", ...
  std::vector<std::string> values;        // enum
  std::string element;                    // array
  std::vector<Member> members;            // object base members
  std::string tag;                        // flat union discriminator (a member)
  std::vector<Variant> variants;          // flat union branches
  std::vector<std::string> alternatives;  // alternate
};

class Schema {
 public:
  Schema();

  void add_enum(const std::string& name, std::vector<std::string> values);
  void add_object(const std::string& name, std::vector<Member> members, std::string tag = "",
                  std::vector<Variant> variants = {});
  void add_alternate(const std::string& name, std::vector<std::string> alternatives);
  bool has(const std::string& name) const;
  // Null for an unknown name; "[T]" resolves when T is known.
  const TypeInfo* find(const std::string& name) const;

  // Checks `value` against `type`. `path` names the value in messages
  // ("" for command arguments, whose members are then reported bare).
  Result<void> validate(const std::string& type, json& value, const std::string& path = "") const;
  // Checks an arguments object against inline members.
  Result<void> validate_members(const std::vector<Member>& members, json& value,
                                const std::string& path = "") const;

  // Renders `roots` and every type they reach as SchemaInfo entries into
  // `out`; `masked` maps declared names to the opaque names used on the wire.
  class Introspector;

 private:
  friend class Introspector;
  Result<void> check(const TypeInfo& t, json& value, const std::string& path,
                     const std::string& leaf) const;
  Result<void> check_object(const TypeInfo& t, json& value, const std::string& path) const;
  Result<void> check_members(const std::vector<Member>& members, json& value,
                             const std::string& path, std::vector<std::string>* seen) const;
  Result<void> check_alternate(const TypeInfo& t, json& value, const std::string& path,
                               const std::string& leaf) const;
  static std::string expected_name(const TypeInfo& t);

  std::map<std::string, TypeInfo> types_;
  mutable std::map<std::string, TypeInfo> arrays_;
};

// Builds the query-qmp-schema answer: commands and events first, then every
// type they reference, with non-builtin type names replaced by numbers as
// QEMU does.
class Schema::Introspector {
 public:
  explicit Introspector(const Schema& schema) : schema_(schema) {}
  void add_command(const std::string& name, const std::string& arg_type,
                   const std::string& ret_type, bool allow_oob = false);
  void add_event(const std::string& name, const std::string& arg_type);
  json finish();

 private:
  std::string ref(const std::string& type);
  json render(const TypeInfo& t, const std::string& wire_name);

  const Schema& schema_;
  json entries_ = json::array();
  std::map<std::string, std::string> wire_names_;
  std::vector<std::string> pending_;
  int next_number_ = 0;
};

// "Parameter 'x' is missing" etc.; `path` is the full dotted name.
Error missing_parameter(const std::string& path);
Error unexpected_parameter(const std::string& path);
Error invalid_parameter_type(const std::string& path, const std::string& expected);
Error invalid_parameter_value(const std::string& name, const std::string& value);

}  // namespace strata::qmp
