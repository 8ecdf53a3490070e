// BlockStats: per-node I/O accounting, the fields QEMU's query-blockstats
// reports.
// Thread rules: loop-thread only.
#pragma once

#include <cstdint>

namespace strata {

struct BlockStats {
  uint64_t rd_bytes = 0, wr_bytes = 0, zone_append_bytes = 0, unmap_bytes = 0;
  uint64_t rd_operations = 0, wr_operations = 0, flush_operations = 0, unmap_operations = 0;
  uint64_t zero_operations = 0, zero_bytes = 0;
  uint64_t rd_total_time_ns = 0, wr_total_time_ns = 0, flush_total_time_ns = 0,
           unmap_total_time_ns = 0;
  uint64_t failed_rd_operations = 0, failed_wr_operations = 0, failed_flush_operations = 0,
           failed_unmap_operations = 0;
  uint64_t invalid_rd_operations = 0, invalid_wr_operations = 0, invalid_flush_operations = 0,
           invalid_unmap_operations = 0;
  uint64_t rd_merged = 0, wr_merged = 0, unmap_merged = 0;
  uint64_t wr_highest_offset = 0;
  uint64_t last_access_ns = 0;  // monotonic time of the last completed request, 0 if none
};

}  // namespace strata
