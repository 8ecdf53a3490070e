// The throttle-group object type: QMP's view of the engine's throttle groups
// (block/filters/throttle_group.h), with QEMU's property names.
//
// object-add takes `limits` (ThrottleLimits) and the flat "x-" properties
// (ThrottleGroupProperties); qom-get reads `limits` and each "x-" property;
// qom-set changes `limits` only (the given members; the others stay), as
// QEMU. object-del refuses a group that a throttle node uses.
#include "base/throttle.h"
#include "block/core/graph.h"
#include "block/filters/throttle_group.h"
#include "qmp/context.h"
#include "qmp/objects.h"

namespace strata::qmp {

using nlohmann::json;

namespace {

enum class LimitKind { kAvg, kMax, kLength, kSize };

struct LimitField {
  const char* name;  // the ThrottleLimits member; "x-" + name is the flat property
  BucketType bucket;
  LimitKind kind;
};

// In the order QEMU's throttle_limits_to_config applies them.
constexpr LimitField kFields[] = {
    {"bps-total", BucketType::kBpsTotal, LimitKind::kAvg},
    {"bps-read", BucketType::kBpsRead, LimitKind::kAvg},
    {"bps-write", BucketType::kBpsWrite, LimitKind::kAvg},
    {"iops-total", BucketType::kOpsTotal, LimitKind::kAvg},
    {"iops-read", BucketType::kOpsRead, LimitKind::kAvg},
    {"iops-write", BucketType::kOpsWrite, LimitKind::kAvg},
    {"bps-total-max", BucketType::kBpsTotal, LimitKind::kMax},
    {"bps-read-max", BucketType::kBpsRead, LimitKind::kMax},
    {"bps-write-max", BucketType::kBpsWrite, LimitKind::kMax},
    {"iops-total-max", BucketType::kOpsTotal, LimitKind::kMax},
    {"iops-read-max", BucketType::kOpsRead, LimitKind::kMax},
    {"iops-write-max", BucketType::kOpsWrite, LimitKind::kMax},
    {"bps-total-max-length", BucketType::kBpsTotal, LimitKind::kLength},
    {"bps-read-max-length", BucketType::kBpsRead, LimitKind::kLength},
    {"bps-write-max-length", BucketType::kBpsWrite, LimitKind::kLength},
    {"iops-total-max-length", BucketType::kOpsTotal, LimitKind::kLength},
    {"iops-read-max-length", BucketType::kOpsRead, LimitKind::kLength},
    {"iops-write-max-length", BucketType::kOpsWrite, LimitKind::kLength},
    {"iops-size", BucketType::kOpsTotal, LimitKind::kSize},
};

constexpr int64_t kUintMax = 4294967295;

uint64_t& field_of(ThrottleConfig& c, const LimitField& f) {
  LeakyBucket& b = c.bucket(f.bucket);
  switch (f.kind) {
    case LimitKind::kAvg:
      return b.avg;
    case LimitKind::kMax:
      return b.max;
    case LimitKind::kLength:
      return b.burst_length;
    case LimitKind::kSize:
      break;
  }
  return c.op_size;
}

// QAPI ints, stored in unsigned fields as C converts them.
int64_t int_of(const json& v) {
  return v.is_number_unsigned() ? static_cast<int64_t>(v.get<uint64_t>()) : v.get<int64_t>();
}

// QEMU's throttle_limits_to_config: sets what `limits` has, then checks.
Result<void> apply_limits(const json& limits, ThrottleConfig& config) {
  for (const LimitField& f : kFields) {
    auto it = limits.find(f.name);
    if (it == limits.end()) continue;
    int64_t v = int_of(*it);
    if (f.kind == LimitKind::kLength && v > kUintMax) {
      return Error{EINVAL, std::string(f.name) + " value must be in the range [0, 4294967295]"};
    }
    field_of(config, f) = static_cast<uint64_t>(v);
  }
  return check_throttle_config(config);
}

// The "x-" properties of object-add (QEMU's throttle_group_set; its
// message for a length out of range lacks a space, as here).
Result<void> apply_flat_properties(const json& props, ThrottleConfig& config) {
  for (const LimitField& f : kFields) {
    auto it = props.find(std::string("x-") + f.name);
    if (it == props.end()) continue;
    int64_t v = int_of(*it);
    if (v < 0) return Error{EINVAL, "Property values cannot be negative"};
    if (f.kind == LimitKind::kLength && v > kUintMax) {
      return Error{EINVAL,
                   "x-" + std::string(f.name) + " value must be in therange [0, 4294967295]"};
    }
    field_of(config, f) = static_cast<uint64_t>(v);
  }
  return {};
}

json limits_of(const ThrottleConfig& config) {
  json out = json::object();
  ThrottleConfig c = config;
  for (const LimitField& f : kFields) out[f.name] = static_cast<int64_t>(field_of(c, f));
  return out;
}

ThrottleGroups& groups(QmpContext& ctx) {
  return ctx.engine().graph().throttle_groups();
}

Result<ThrottleGroup*> group_of(QmpContext& ctx, const UserObject& o) {
  ThrottleGroup* g = groups(ctx).find(o.id);
  if (!g) return Error{ENOENT, "Throttle group '" + o.id + "' does not exist"};
  return g;
}

Result<void> create_group(QmpContext& ctx, UserObject& o) {
  ThrottleConfig config;
  STRATA_TRY(apply_flat_properties(o.props, config));
  if (o.props.contains("limits")) STRATA_TRY(apply_limits(o.props["limits"], config));
  auto group = groups(ctx).create(o.id, config);
  if (!group) return std::move(group).error();
  return {};
}

const LimitField* flat_field(const std::string& property) {
  for (const LimitField& f : kFields) {
    if (property == std::string("x-") + f.name) return &f;
  }
  return nullptr;
}

Result<json> get_property(QmpContext& ctx, const UserObject& o, const std::string& property) {
  STRATA_TRY_ASSIGN(ThrottleGroup * g, group_of(ctx, o));
  ThrottleConfig config = g->config();
  if (property == "limits") return limits_of(config);
  const LimitField* f = flat_field(property);
  if (!f) return Error{ENOENT, "Property 'throttle-group." + property + "' not found"};
  return json(static_cast<int64_t>(field_of(config, *f)));
}

Result<void> set_property(QmpContext& ctx, UserObject& o, const std::string& property, json value) {
  STRATA_TRY_ASSIGN(ThrottleGroup * g, group_of(ctx, o));
  if (flat_field(property)) return Error{EINVAL, "Property cannot be set after initialization"};
  if (property != "limits") {
    return Error{ENOENT, "Property 'throttle-group." + property + "' not found"};
  }
  STRATA_TRY(ctx.registry().schema().validate("ThrottleLimits", value, "limits"));
  ThrottleConfig config = g->config();
  STRATA_TRY(apply_limits(value, config));
  return g->set_config(config);
}

void add_schema_types(Schema& s) {
  std::vector<Member> limits;
  std::vector<Member> props = {{"limits", "ThrottleLimits", true}};
  for (const LimitField& f : kFields) {
    limits.push_back({f.name, "int", true});
    props.push_back({std::string("x-") + f.name, "int", true});
  }
  s.add_object("ThrottleLimits", limits);
  s.add_object("ThrottleGroupProperties", props);
}

}  // namespace

void register_throttle_group_object(QmpContext& ctx) {
  add_schema_types(ctx.registry().schema());
  QmpContext* c = &ctx;
  ObjectTypeOps ops;
  ops.create = [c](UserObject& o) { return create_group(*c, o); };
  ops.release = [c](UserObject& o) -> Result<void> {
    if (!groups(*c).find(o.id)) return {};  // an embedder removed it
    return groups(*c).remove(o.id);
  };
  ops.get = [c](const UserObject& o, const std::string& p) { return get_property(*c, o, p); };
  ops.set = [c](UserObject& o, const std::string& p, json v) {
    return set_property(*c, o, p, std::move(v));
  };
  add_object_type(ctx, "throttle-group", "ThrottleGroupProperties", std::move(ops));
}

}  // namespace strata::qmp
