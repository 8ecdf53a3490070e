// The schema of the block commands: BlockdevOptions is generated from the
// drivers the Engine has (DriverSpec::options), so blockdev-add validation
// and query-qmp-schema follow the drivers as they are added.
#include "qmp/block_schema.h"

#include "block/core/driver_registry.h"
#include "block/core/filename.h"
#include "block/core/graph.h"
#include "block/drivers/probe/probe.h"
#include "qmp/keyval.h"

namespace strata::qmp {

namespace {

std::string type_of(OptType t) {
  switch (t) {
    case OptType::kString:
      return "str";
    case OptType::kInt:
      return "int";
    case OptType::kUint:
      return "uint64";
    case OptType::kBool:
      return "bool";
    case OptType::kNumber:
      return "number";
    case OptType::kObject:
      return "any";
    case OptType::kArray:
      return "[any]";
    case OptType::kChild:
      return "BlockdevRef";
    case OptType::kChildOrNull:
      return "BlockdevRefOrNull";
    case OptType::kAny:
      return "any";
  }
  return "any";
}

void add_info_types(Schema& s) {
  s.add_enum("BlockdevDetectZeroesOptions", {"off", "on", "unmap"});
  s.add_object("BlockdevCacheInfo",
               {{"writeback", "bool"}, {"direct", "bool"}, {"no-flush", "bool"}});
  s.add_object("ImageInfoSpecific", {{"type", "str"}, {"data", "any"}});
  s.add_object("ImageInfo", {{"filename", "str"},
                             {"format", "str"},
                             {"dirty-flag", "bool", true},
                             {"actual-size", "int", true},
                             {"virtual-size", "int"},
                             {"cluster-size", "int", true},
                             {"encrypted", "bool", true},
                             {"compressed", "bool", true},
                             {"backing-filename", "str", true},
                             {"full-backing-filename", "str", true},
                             {"backing-filename-format", "str", true},
                             {"backing-image", "ImageInfo", true},
                             {"format-specific", "ImageInfoSpecific", true}});
  s.add_object("BlockdevChild", {{"child", "str"}, {"node-name", "str"}});
  std::vector<Member> info = {{"file", "str"},
                              {"node-name", "str", true},
                              {"ro", "bool"},
                              {"drv", "str"},
                              {"backing_file", "str", true},
                              {"backing_file_depth", "int"},
                              {"children", "[BlockdevChild]"},
                              {"active", "bool"},
                              {"encrypted", "bool"},
                              {"detect_zeroes", "BlockdevDetectZeroesOptions"}};
  for (const char* limit : {"bps", "bps_rd", "bps_wr", "iops", "iops_rd", "iops_wr"}) {
    info.push_back({limit, "int"});
  }
  info.push_back({"image", "ImageInfo"});
  info.push_back({"cache", "BlockdevCacheInfo"});
  info.push_back({"write_threshold", "int"});
  info.push_back({"dirty-bitmaps", "[any]", true});
  s.add_object("BlockDeviceInfo", info);
  s.add_object("BlockInfo", {{"device", "str"},
                             {"qdev", "str", true},
                             {"type", "str"},
                             {"removable", "bool"},
                             {"locked", "bool"},
                             {"inserted", "BlockDeviceInfo", true}});
  s.add_object("BlockStats", {{"device", "str", true},
                              {"node-name", "str", true},
                              {"qdev", "str", true},
                              {"stats", "any"},
                              {"driver-specific", "any", true},
                              {"parent", "BlockStats", true},
                              {"backing", "BlockStats", true}});
}

void add_create_types(Schema& s) {
  s.add_enum("PreallocMode", {"off", "metadata", "falloc", "full"});
  s.add_enum("BlockdevQcow2Version", {"v2", "v3"});
  s.add_enum("BlockdevCreateDriver", {"file", "qcow2"});
  s.add_object("BlockdevCreateOptionsFile", {{"filename", "str"},
                                             {"size", "size"},
                                             {"preallocation", "PreallocMode", true},
                                             {"nocow", "bool", true},
                                             {"extent-size-hint", "size", true}});
  s.add_object("BlockdevCreateOptionsQcow2", {{"file", "BlockdevRef"},
                                              {"data-file", "BlockdevRef", true},
                                              {"size", "size"},
                                              {"version", "BlockdevQcow2Version", true},
                                              {"cluster-size", "size", true},
                                              {"preallocation", "PreallocMode", true},
                                              {"lazy-refcounts", "bool", true},
                                              {"refcount-bits", "int", true},
                                              {"backing-file", "str", true},
                                              {"backing-fmt", "str", true}});
  s.add_object("BlockdevCreateOptions", {{"driver", "BlockdevCreateDriver"}}, "driver",
               {{"file", "BlockdevCreateOptionsFile"}, {"qcow2", "BlockdevCreateOptionsQcow2"}});
}

}  // namespace

void add_blockdev_options_type(Schema& s, const DriverRegistry& drivers) {
  s.add_enum("BlockdevDiscardOptions", {"ignore", "unmap"});
  s.add_enum("BlockdevDetectZeroesOptions", {"off", "on", "unmap"});
  s.add_object("BlockdevCacheOptions", {{"direct", "bool", true}, {"no-flush", "bool", true}});
  std::vector<std::string> names = drivers.names();
  s.add_enum("BlockdevDriver", names);
  std::vector<Variant> variants;
  for (const auto& name : names) {
    std::vector<Member> members;
    for (const auto& o : drivers.find(name)->options) {
      members.push_back({o.name, type_of(o.type), !o.required});
    }
    std::string type = "BlockdevOptions-" + name;
    s.add_object(type, members);
    variants.push_back({name, type});
  }
  s.add_object("BlockdevOptions",
               {{"driver", "BlockdevDriver"},
                {"node-name", "str", true},
                {"discard", "BlockdevDiscardOptions", true},
                {"cache", "BlockdevCacheOptions", true},
                {"read-only", "bool", true},
                {"auto-read-only", "bool", true},
                {"force-share", "bool", true},
                {"detect-zeroes", "BlockdevDetectZeroesOptions", true},
                {"active", "bool", true}},
               "driver", variants);
  s.add_alternate("BlockdevRef", {"BlockdevOptions", "str"});
  s.add_alternate("BlockdevRefOrNull", {"BlockdevOptions", "str", "null"});
}

void add_block_types(Schema& s, const DriverRegistry& drivers) {
  add_blockdev_options_type(s, drivers);
  add_info_types(s);
  add_create_types(s);
}

namespace {

// QEMU's inference for options given without a protocol: `filename` moves
// into `file`, and `file.driver` follows from `file.filename` (the
// protocol its name starts with, or `file`).
Result<void> infer_protocol(const DriverRegistry& drivers, nlohmann::json& opts) {
  if (opts.contains("filename") && !opts.contains("file") && opts["filename"].is_string()) {
    STRATA_TRY_ASSIGN(opts["file"],
                      filename_node_options(drivers, opts["filename"].get<std::string>()));
    opts.erase("filename");
  }
  if (!opts.contains("file") || !opts["file"].is_object()) return {};
  nlohmann::json& file = opts["file"];
  if (!file.contains("driver") && file.contains("filename") && file["filename"].is_string()) {
    STRATA_TRY_ASSIGN(nlohmann::json node,
                      filename_node_options(drivers, file["filename"].get<std::string>()));
    file["driver"] = node.value("driver", "file");
  }
  return {};
}

Result<nlohmann::json> typed(const DriverRegistry& drivers, nlohmann::json strings) {
  Schema schema;
  add_block_types(schema, drivers);
  return keyval_to_typed(schema, "BlockdevOptions", std::move(strings));
}

Result<nlohmann::json> parse_untyped(const DriverRegistry& drivers, const std::string& text) {
  if (!text.empty() && text[0] == '{') {
    nlohmann::json value = nlohmann::json::parse(text, nullptr, false);
    if (value.is_discarded() || !value.is_object()) {
      return Error{EINVAL, "Could not parse the image options '" + text + "'"};
    }
    STRATA_TRY(infer_protocol(drivers, value));
    return value;
  }
  STRATA_TRY_ASSIGN(nlohmann::json strings, parse_keyval(text));
  STRATA_TRY(infer_protocol(drivers, strings));
  return strings;
}

}  // namespace

Result<nlohmann::json> parse_image_options(const DriverRegistry& drivers, const std::string& text) {
  STRATA_TRY_ASSIGN(nlohmann::json opts, parse_untyped(drivers, text));
  if (!text.empty() && text[0] == '{') return opts;
  return typed(drivers, std::move(opts));
}

Task<Result<nlohmann::json>> co_parse_image_options(Engine& engine, const std::string& text) {
  const DriverRegistry& drivers = engine.graph().drivers();
  STRATA_CO_TRY_ASSIGN(nlohmann::json opts, parse_untyped(drivers, text));
  const nlohmann::json* file = opts.contains("file") ? &opts["file"] : nullptr;
  bool probed_raw = false;
  if (!opts.contains("driver") && file && file->is_object() &&
      file->value("driver", "") == "file" && file->contains("filename") &&
      (*file)["filename"].is_string()) {
    STRATA_CO_TRY_ASSIGN(std::string fmt, co_await probe::co_probe_driver(engine.loop(), drivers,
                                                                          (*file)["filename"]));
    opts["driver"] = fmt;
    probed_raw = fmt == "raw";
  }
  if (!text.empty() && text[0] != '{') {
    STRATA_CO_TRY_ASSIGN(opts, typed(drivers, std::move(opts)));
  }
  // As a probed name on the command line (block/core/filename.h).
  if (probed_raw) opts["x-probed"] = true;
  co_return opts;
}

}  // namespace strata::qmp
