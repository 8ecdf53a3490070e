// The drivers built into libstrata. Each driver file provides one
// register_* function; adding a driver adds one line here.
#include "block/core/driver_registry.h"

namespace strata {

void register_file_driver(DriverRegistry& registry);
void register_raw_driver(DriverRegistry& registry);
void register_null_driver(DriverRegistry& registry);
void register_fault_filter(DriverRegistry& registry);
void register_mirror_top_filter(DriverRegistry& registry);
void register_commit_top_filter(DriverRegistry& registry);
void register_copy_on_read_filter(DriverRegistry& registry);
void register_copy_before_write_filter(DriverRegistry& registry);
void register_snapshot_access_driver(DriverRegistry& registry);
void register_throttle_filter(DriverRegistry& registry);
void register_qcow2_driver(DriverRegistry& registry);
void register_nbd_driver(DriverRegistry& registry);
void register_vdi_driver(DriverRegistry& registry);
void register_vpc_driver(DriverRegistry& registry);
void register_vmdk_driver(DriverRegistry& registry);

void register_builtin_drivers(DriverRegistry& registry) {
  register_file_driver(registry);
  register_raw_driver(registry);
  register_null_driver(registry);
  register_fault_filter(registry);
  register_mirror_top_filter(registry);
  register_commit_top_filter(registry);
  register_copy_on_read_filter(registry);
  register_copy_before_write_filter(registry);
  register_snapshot_access_driver(registry);
  register_throttle_filter(registry);
  register_qcow2_driver(registry);
  register_nbd_driver(registry);
  register_vdi_driver(registry);
  register_vpc_driver(registry);
  register_vmdk_driver(registry);
}

}  // namespace strata
