// User-creatable objects (QEMU's --object / object-add / object-del): today
// `secret`; the NBD TLS code adds `tls-creds-*` with add_object_type().
//
// Contract: ObjectStore is a QmpContext service holding objects by id. Each
// object type validates its properties (a schema object type) and may keep
// derived state; ids are unique across types ("attempt to add duplicate
// property 'x' to object (type 'container')" as QEMU words it). Secrets keep
// their decoded bytes (from `data` or `file`, raw or base64).
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
  nlohmann::json props;  // as given (validated)
  std::string secret;    // secret objects: the decoded value
};

// Checks a new object's properties and fills derived state.
using ObjectCreator = std::function<Result<void>(UserObject& object)>;

class ObjectStore {
 public:
  explicit ObjectStore(QmpContext&) {}
  Result<void> add(nlohmann::json options);  // {"qom-type", "id", props...}
  Result<void> remove(const std::string& id);
  const UserObject* find(const std::string& id) const;
  // A secret's value, or an error naming the id.
  Result<std::string> secret(const std::string& id) const;

  void add_type(const std::string& qom_type, ObjectCreator creator) {
    creators_[qom_type] = std::move(creator);
  }

 private:
  std::map<std::string, UserObject> objects_;
  std::map<std::string, ObjectCreator> creators_;
};

// Declares an object type: its properties type joins the ObjectOptions
// union (used by object-add and --object) and `creator` checks new objects.
void add_object_type(QmpContext& ctx, const std::string& qom_type, const std::string& props_type,
                     ObjectCreator creator);
// object-add, object-del and the secret type.
void register_object_commands(QmpContext& ctx);

}  // namespace strata::qmp
