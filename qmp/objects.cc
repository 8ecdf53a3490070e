// ObjectStore, the secret object type, object-add and object-del.
#include "qmp/objects.h"

#include <openssl/evp.h>

#include <fstream>
#include <sstream>

#include "block/core/graph.h"
#include "qmp/context.h"
#include "qmp/errors.h"

namespace strata::qmp {

using nlohmann::json;

namespace {

// The union's variants, kept in the schema's ObjectOptions type.
void add_variant(Schema& s, const std::string& qom_type, const std::string& props_type) {
  const TypeInfo* old = s.find("ObjectOptions");
  std::vector<std::string> kinds;
  std::vector<Variant> variants;
  if (old) {
    for (const auto& v : old->variants) {
      if (v.tag_value == qom_type) continue;
      kinds.push_back(v.tag_value);
      variants.push_back(v);
    }
  }
  kinds.push_back(qom_type);
  variants.push_back({qom_type, props_type});
  s.add_enum("ObjectType", kinds);
  s.add_object("ObjectOptions", {{"qom-type", "ObjectType"}, {"id", "str"}}, "qom-type", variants);
}

Result<std::string> decode_base64(const std::string& in) {
  std::string clean;
  for (char c : in) {
    if (c != '\n' && c != '\r' && c != ' ') clean.push_back(c);
  }
  if (clean.size() % 4) return Error{EINVAL, "Invalid base64 data"};
  std::string out(clean.size() / 4 * 3 + 1, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(clean.data()),
                          static_cast<int>(clean.size()));
  if (n < 0) return Error{EINVAL, "Invalid base64 data"};
  size_t pad = 0;
  if (!clean.empty() && clean.back() == '=') pad++;
  if (clean.size() > 1 && clean[clean.size() - 2] == '=') pad++;
  out.resize(static_cast<size_t>(n) - pad);
  return out;
}

Result<void> create_secret(UserObject& o) {
  bool has_data = o.props.contains("data");
  bool has_file = o.props.contains("file");
  if (has_data == has_file) {
    return Error{EINVAL, has_data ? "'data' and 'file' are mutually exclusive"
                                  : "Either 'data' or 'file' must be provided"};
  }
  std::string raw;
  if (has_data) {
    raw = o.props["data"].get<std::string>();
  } else {
    std::string path = o.props["file"].get<std::string>();
    std::ifstream in(path, std::ios::binary);
    if (!in) return Error{ENOENT, "Unable to read " + path + ": No such file or directory"};
    std::ostringstream ss;
    ss << in.rdbuf();
    raw = ss.str();
  }
  if (o.props.value("format", "raw") == "base64") {
    STRATA_TRY_ASSIGN(raw, decode_base64(raw));
  }
  o.secret = std::move(raw);
  return {};
}

Task<Result<json>> co_object_add(QmpContext& ctx, json args) {
  STRATA_CO_TRY(ctx.service<ObjectStore>().add(std::move(args)));
  co_return json::object();
}

Task<Result<json>> co_object_del(QmpContext& ctx, json args) {
  STRATA_CO_TRY(ctx.service<ObjectStore>().remove(args["id"].get<std::string>()));
  co_return json::object();
}

Task<Result<json>> co_qom_get(QmpContext& ctx, json args) {
  co_return ctx.service<ObjectStore>().get_property(args["path"].get<std::string>(),
                                                    args["property"].get<std::string>());
}

Task<Result<json>> co_qom_set(QmpContext& ctx, json args) {
  STRATA_CO_TRY(ctx.service<ObjectStore>().set_property(args["path"].get<std::string>(),
                                                        args["property"].get<std::string>(),
                                                        std::move(args["value"])));
  co_return json::object();
}

Error device_not_found(const std::string& path) {
  return class_error(ErrorClass::kDeviceNotFound, "Device '" + path + "' not found");
}

Error property_not_found(const std::string& type, const std::string& property) {
  return Error{ENOENT, "Property '" + type + "." + property + "' not found"};
}

}  // namespace

Result<void> ObjectStore::add(json options) {
  std::string type = options["qom-type"].get<std::string>();
  std::string id = options["id"].get<std::string>();
  if (objects_.count(id)) {
    return Error{EEXIST,
                 "attempt to add duplicate property '" + id + "' to object (type 'container')"};
  }
  auto type_ops = types_.find(type);
  if (type_ops == types_.end()) return Error{EINVAL, "Invalid object type '" + type + "'"};
  UserObject o{type, id, options, {}};
  o.props.erase("qom-type");
  o.props.erase("id");
  if (type_ops->second.create) STRATA_TRY(type_ops->second.create(o));
  objects_.emplace(id, std::move(o));
  return {};
}

Result<void> ObjectStore::remove(const std::string& id) {
  auto it = objects_.find(id);
  if (it == objects_.end()) return Error{ENOENT, "object '" + id + "' not found"};
  const ObjectTypeOps* type_ops = ops(it->second);
  if (type_ops && type_ops->release) STRATA_TRY(type_ops->release(it->second));
  objects_.erase(it);
  return {};
}

const ObjectTypeOps* ObjectStore::ops(const UserObject& o) const {
  auto it = types_.find(o.qom_type);
  return it == types_.end() ? nullptr : &it->second;
}

// QOM paths of user objects: "/objects/ID", or the partial path "ID".
std::string ObjectStore::id_of(const std::string& path) {
  std::string id = path.rfind("/objects/", 0) == 0 ? path.substr(9) : path;
  return id.find('/') == std::string::npos ? id : "";
}

Result<json> ObjectStore::get_property(const std::string& path, const std::string& property) const {
  auto it = objects_.find(id_of(path));
  if (it == objects_.end()) return device_not_found(path);
  const UserObject& o = it->second;
  if (property == "type") return json(o.qom_type);
  const ObjectTypeOps* type_ops = ops(o);
  if (!type_ops || !type_ops->get) return property_not_found(o.qom_type, property);
  return type_ops->get(o, property);
}

Result<void> ObjectStore::set_property(const std::string& path, const std::string& property,
                                       json value) {
  auto it = objects_.find(id_of(path));
  if (it == objects_.end()) return device_not_found(path);
  UserObject& o = it->second;
  if (property == "type") {
    return Error{EPERM, "Property '" + o.qom_type + ".type' is not writable"};
  }
  const ObjectTypeOps* type_ops = ops(o);
  if (!type_ops || !type_ops->set) return property_not_found(o.qom_type, property);
  return type_ops->set(o, property, std::move(value));
}

const UserObject* ObjectStore::find(const std::string& id) const {
  auto it = objects_.find(id);
  return it == objects_.end() ? nullptr : &it->second;
}

Result<std::string> ObjectStore::secret(const std::string& id) const {
  const UserObject* o = find(id);
  if (!o || o->qom_type != "secret") return Error{ENOENT, "No secret with id '" + id + "'"};
  return o->secret;
}

void add_object_type(QmpContext& ctx, const std::string& qom_type, const std::string& props_type,
                     ObjectCreator creator) {
  add_object_type(ctx, qom_type, props_type, ObjectTypeOps{.create = std::move(creator)});
}

void add_object_type(QmpContext& ctx, const std::string& qom_type, const std::string& props_type,
                     ObjectTypeOps ops) {
  add_variant(ctx.registry().schema(), qom_type, props_type);
  ctx.service<ObjectStore>().add_type(qom_type, std::move(ops));
}

namespace {
// Block drivers that connect (nbd) find tls-creds-* objects through the
// graph's CredentialStore.
void install_credential_lookup(QmpContext& ctx) {
  ObjectStore* store = &ctx.service<ObjectStore>();
  ctx.engine().graph().credentials().set_lookup(
      [store](const std::string& id) -> Result<TlsCredentials> {
        const UserObject* o = store->find(id);
        if (!o) return Error{ENOENT, "No TLS credentials with id '" + id + "'"};
        if (o->qom_type != "tls-creds-x509" && o->qom_type != "tls-creds-psk") {
          return Error{EINVAL, "Object with id '" + id + "' is not TLS credentials"};
        }
        TlsCredentials c;
        c.type = o->qom_type == "tls-creds-psk" ? TlsCredentials::Type::kPsk
                                                : TlsCredentials::Type::kX509;
        c.dir = o->props.value("dir", "");
        c.endpoint = o->props.value("endpoint", "client");
        c.username = o->props.value("username", "");
        c.verify_peer = o->props.value("verify-peer", true);
        return c;
      });
}
}  // namespace

void register_object_commands(QmpContext& ctx) {
  install_credential_lookup(ctx);
  Schema& s = ctx.registry().schema();
  s.add_enum("QCryptoSecretFormat", {"raw", "base64"});
  s.add_object("SecretProperties", {{"data", "str", true},
                                    {"file", "str", true},
                                    {"format", "QCryptoSecretFormat", true},
                                    {"keyid", "str", true},
                                    {"iv", "str", true},
                                    {"loaded", "bool", true}});
  add_object_type(ctx, "secret", "SecretProperties", create_secret);
  ctx.registry().add({.name = "object-add", .boxed = "ObjectOptions", .handler = co_object_add});
  ctx.registry().add({.name = "object-del", .args = {{"id", "str"}}, .handler = co_object_del});
  ctx.registry().add({.name = "qom-get",
                      .args = {{"path", "str"}, {"property", "str"}},
                      .returns = "any",
                      .handler = co_qom_get});
  ctx.registry().add({.name = "qom-set",
                      .args = {{"path", "str"}, {"property", "str"}, {"value", "any"}},
                      .handler = co_qom_set});
  register_throttle_group_object(ctx);
}

}  // namespace strata::qmp
