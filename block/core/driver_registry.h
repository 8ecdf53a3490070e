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
  // Protocol drivers: QEMU's protocol names this driver claims ("nbd",
  // "nbd+unix", ...); a file name "NAME:..." opens with it
  // (block/core/filename.h).
  std::vector<std::string> protocols = {};
  // QEMU's bdrv_parse_filename: the driver's options for a file name it
  // claims, without "driver". Unset: {"filename": name}.
  std::function<Result<nlohmann::json>(const std::string& filename)> parse_filename = {};
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
  // The protocol driver registered for protocol `name`, or null.
  const DriverSpec* find_protocol(const std::string& name) const {
    for (const auto& [driver, spec] : specs_) {
      for (const auto& p : spec.protocols) {
        if (p == name) return &spec;
      }
    }
    return nullptr;
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
