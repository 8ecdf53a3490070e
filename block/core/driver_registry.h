// DriverRegistry: the drivers an Engine can open, by name, with their
// option lists (used for validation and for the QMP schema).
// Thread rules: filled at Engine construction, read-only afterwards.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "block/core/driver.h"
#include "block/core/options.h"

namespace strata {

enum class DriverKind { kProtocol, kFormat, kFilter };

struct DriverSpec {
  std::string name;
  DriverKind kind = DriverKind::kFormat;
  std::vector<OptionSpec> options;  // driver-specific options
  std::function<std::unique_ptr<Driver>()> create;
  // Protocol drivers: file-name prefixes they claim ("nbd+unix:", ...); such
  // a file name opens with this driver, the name passed as `filename`.
  std::vector<std::string> filename_prefixes = {};
  // Opened by jobs only (Graph::co_add_internal): blockdev-add and inline
  // children refuse it as an unknown driver, as QEMU does for mirror_top.
  bool internal = false;
};

class DriverRegistry {
 public:
  void add(DriverSpec spec) { specs_[spec.name] = std::move(spec); }
  const DriverSpec* find(const std::string& name) const {
    auto it = specs_.find(name);
    return it == specs_.end() ? nullptr : &it->second;
  }
  // The protocol driver claiming `filename` by one of its prefixes, or null.
  const DriverSpec* find_by_filename(const std::string& filename) const {
    for (const auto& [name, spec] : specs_) {
      for (const auto& prefix : spec.filename_prefixes) {
        if (filename.rfind(prefix, 0) == 0) return &spec;
      }
    }
    return nullptr;
  }
  // Options of the protocol node for a plain file name (QEMU's protocol
  // lookup): the driver claiming its prefix, else "file".
  nlohmann::json protocol_options(const std::string& filename) const {
    const DriverSpec* spec = find_by_filename(filename);
    return {{"driver", spec ? spec->name : "file"}, {"filename", filename}};
  }
  // Drivers users may name (internal ones left out).
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& [name, spec] : specs_) {
      if (!spec.internal) out.push_back(name);
    }
    return out;
  }

 private:
  std::map<std::string, DriverSpec> specs_;
};

// Registers every driver built into libstrata (block/drivers/builtin.cc).
void register_builtin_drivers(DriverRegistry& registry);

}  // namespace strata
