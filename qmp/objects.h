// User-creatable objects (QEMU's --object / object-add / object-del, and
// qom-get / qom-set on them): `secret` and `throttle-group`
// (qmp/objects_throttle.cc); the NBD TLS code adds `tls-creds-*` with
// add_object_type().
//
// Contract: ObjectStore is a QmpContext service holding objects by id. Each
// object type validates its properties (a schema object type) and may keep
// derived state; ids are unique across types ("attempt to add duplicate
// property 'x' to object (type 'container')" as QEMU words it). Secrets keep
// their decoded bytes (from `data` or `file`, raw or base64). A type may
// refuse the deletion of an object (in use) and may let qom-get / qom-set
// read and change properties; every object has the read-only property
// `type`. Objects are found by id or by QOM path "/objects/ID".
// Thread rules: loop-thread only.
#pragma once

#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "qmp/registry.h"
#include "strata/result.h"

namespace strata::qmp {

class QmpContext;

struct UserObject {
  std::string qom_type;
  std::string id;
  nlohmann::json props;  // as given (validated)
  std::string secret;    // secret objects: the decoded value
};

// Checks a new object's properties and fills derived state.
using ObjectCreator = std::function<Result<void>(UserObject& object)>;

// What a type does besides creating objects; each member may be empty.
struct ObjectTypeOps {
  ObjectCreator create;
  // Called before an object is deleted; an error keeps it (in use).
  std::function<Result<void>(UserObject& object)> release;
  // qom-get of a property other than `type`.
  std::function<Result<nlohmann::json>(const UserObject& object, const std::string& property)> get;
  // qom-set of a property other than `type`.
  std::function<Result<void>(UserObject& object, const std::string& property, nlohmann::json value)>
      set;
};

class ObjectStore {
 public:
  explicit ObjectStore(QmpContext&) {}
  Result<void> add(nlohmann::json options);  // {"qom-type", "id", props...}
  Result<void> remove(const std::string& id);
  const UserObject* find(const std::string& id) const;
  // A secret's value, or an error naming the id.
  Result<std::string> secret(const std::string& id) const;
  // qom-get / qom-set: `path` is an id or "/objects/ID" (DeviceNotFound
  // otherwise).
  Result<nlohmann::json> get_property(const std::string& path, const std::string& property) const;
  Result<void> set_property(const std::string& path, const std::string& property,
                            nlohmann::json value);

  void add_type(const std::string& qom_type, ObjectTypeOps ops) {
    types_[qom_type] = std::move(ops);
  }

 private:
  static std::string id_of(const std::string& path);
  const ObjectTypeOps* ops(const UserObject& o) const;

  std::map<std::string, UserObject> objects_;
  std::map<std::string, ObjectTypeOps> types_;
};

// Declares an object type: its properties type joins the ObjectOptions
// union (used by object-add and --object) and `creator` checks new objects.
void add_object_type(QmpContext& ctx, const std::string& qom_type, const std::string& props_type,
                     ObjectCreator creator);
void add_object_type(QmpContext& ctx, const std::string& qom_type, const std::string& props_type,
                     ObjectTypeOps ops);
// object-add, object-del, qom-get, qom-set, the secret and throttle-group
// types.
void register_object_commands(QmpContext& ctx);
// The throttle-group type (qmp/objects_throttle.cc).
void register_throttle_group_object(QmpContext& ctx);

}  // namespace strata::qmp
