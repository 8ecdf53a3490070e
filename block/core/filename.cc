// File names to node options (QEMU's bdrv_fill_options, bdrv_find_protocol,
// parse_json_filename and bdrv_make_absolute_filename).
#include "block/core/filename.h"

#include "block/drivers/probe/probe.h"
#include "qmp/json_stream.h"

namespace strata {

using nlohmann::json;

namespace {

constexpr std::string_view kJsonPrefix = "json:";

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// Sets `value` at the dotted `key` of `out`, creating objects on the way.
Result<void> put_dotted(json& out, const std::string& key, json value) {
  json* at = &out;
  size_t start = 0;
  for (size_t dot; (dot = key.find('.', start)) != std::string::npos; start = dot + 1) {
    json& next = (*at)[key.substr(start, dot - start)];
    if (next.is_null()) next = json::object();
    if (!next.is_object()) return Error{EINVAL, "Invalid JSON object given"};
    at = &next;
  }
  json& leaf = (*at)[key.substr(start)];
  if (leaf.is_object() && value.is_object()) {
    for (auto& [k, v] : value.items()) STRATA_TRY(put_dotted(leaf, k, v));
    return {};
  }
  if (!leaf.is_null()) return Error{EINVAL, "Invalid JSON object given"};
  leaf = std::move(value);
  return {};
}

// {"file.filename": "x", "file": {"driver": "file"}} -> nested objects.
Result<json> expand_dotted(const json& in) {
  json out = json::object();
  for (const auto& [key, value] : in.items()) {
    json v = value;
    if (v.is_object()) {
      STRATA_TRY_ASSIGN(v, expand_dotted(v));
    }
    STRATA_TRY(put_dotted(out, key, std::move(v)));
  }
  return out;
}

// A `file` child named by its file name alone is a `file` node (QEMU opens
// such a child with the file protocol, prefixes not parsed).
void infer_file_drivers(json& node) {
  for (auto& [key, value] : node.items()) {
    if (!value.is_object()) continue;
    if (key == "file" && !value.contains("driver") && value.contains("filename")) {
      value["driver"] = "file";
    }
    infer_file_drivers(value);
  }
}

Result<json> parse_json_filename(const std::string& filename) {
  std::string error;
  auto parsed = qmp::parse_qmp_json(std::string_view(filename).substr(kJsonPrefix.size()), &error);
  if (!parsed) return Error{EINVAL, "Could not parse the JSON options: " + error};
  if (!parsed->is_object()) return Error{EINVAL, "Invalid JSON object given"};
  STRATA_TRY_ASSIGN(json options, expand_dotted(*parsed));
  infer_file_drivers(options);
  return options;
}

// The driver's options for `filename` (QEMU's bdrv_parse_filename).
Result<json> parse_with(const DriverSpec& spec, const std::string& filename) {
  json options = {{"filename", filename}};
  if (spec.parse_filename) {
    STRATA_TRY_ASSIGN(options, spec.parse_filename(filename));
  }
  options["driver"] = spec.name;
  return options;
}

// The format for a node whose protocol options are `file`, when none was
// given: a local file is probed, anything else is raw.
Task<Result<std::string>> co_default_format(Loop& loop, const DriverRegistry& drivers, json file) {
  if (file.is_object() && file.value("driver", "") == "file" && file.contains("filename") &&
      file["filename"].is_string()) {
    co_return co_await probe::co_probe_driver(loop, drivers, file["filename"].get<std::string>());
  }
  co_return std::string("raw");
}

Task<Result<json>> co_json_options(Loop& loop, const DriverRegistry& drivers, json options,
                                   std::string format) {
  if (!format.empty()) {
    options["driver"] = format;
    co_return options;
  }
  if (options.contains("driver")) co_return options;
  if (!options.contains("file")) co_return Error{EINVAL, "Must specify either driver or file"};
  STRATA_CO_TRY_ASSIGN(options["driver"],
                       co_await co_default_format(loop, drivers, options["file"]));
  co_return options;
}

}  // namespace

bool path_has_protocol(std::string_view name) {
  size_t stop = name.find_first_of(":/");
  return stop != std::string_view::npos && name[stop] == ':';
}

Result<json> filename_node_options(const DriverRegistry& drivers, const std::string& filename) {
  if (starts_with(filename, kJsonPrefix)) return parse_json_filename(filename);
  if (!path_has_protocol(filename)) return json{{"driver", "file"}, {"filename", filename}};
  std::string protocol = filename.substr(0, filename.find(':'));
  const DriverSpec* spec = drivers.find_protocol(protocol);
  if (!spec) return Error{EINVAL, "Unknown protocol '" + protocol + "'"};
  return parse_with(*spec, filename);
}

Task<Result<json>> co_filename_options(Loop& loop, const DriverRegistry& drivers,
                                       std::string filename, std::string format) {
  STRATA_CO_TRY_ASSIGN(json node, filename_node_options(drivers, filename));
  if (starts_with(filename, kJsonPrefix)) {
    co_return co_await co_json_options(loop, drivers, std::move(node), std::move(format));
  }
  if (const DriverSpec* spec = drivers.find(format); spec && spec->kind == DriverKind::kProtocol) {
    // "-f nbd nbd://...": the protocol driver itself, parsing the whole name.
    if (node.value("driver", "") == format) co_return node;
    co_return parse_with(*spec, filename);
  }
  bool probed = format.empty();
  if (probed) {
    STRATA_CO_TRY_ASSIGN(format, co_await co_default_format(loop, drivers, node));
  }
  json options = {{"driver", format}, {"file", std::move(node)}};
  // As QEMU's raw driver on a probed image: writes that would make it probe
  // as another format are refused, and a read-write open warns.
  if (probed && format == "raw") options["x-probed"] = true;
  co_return options;
}

std::string path_combine(const std::string& base, const std::string& name) {
  if (!name.empty() && name[0] == '/') return name;
  size_t start = path_has_protocol(base) ? base.find(':') + 1 : 0;
  size_t slash = base.rfind('/');
  size_t keep = (slash == std::string::npos || slash + 1 < start) ? start : slash + 1;
  return base.substr(0, keep) + name;
}

Result<std::string> backing_filename(const std::string& overlay, const std::string& backing) {
  if (backing.empty() || backing[0] == '/' || path_has_protocol(backing)) return backing;
  if (overlay.empty() || starts_with(overlay, kJsonPrefix)) {
    return Error{EINVAL, "Cannot use relative backing file names for '" + overlay + "'"};
  }
  return path_combine(overlay, backing);
}

}  // namespace strata
