#include "block/drivers/qcow2/check_l2.h"

#include <cinttypes>
#include <cstdio>

namespace strata::qcow2 {

namespace {

std::string message(const char* fmt, uint64_t value) {
  char buf[160];
  std::snprintf(buf, sizeof buf, fmt, value);
  return buf;
}

std::string message(const char* fmt, uint64_t index, uint64_t value) {
  char buf[160];
  std::snprintf(buf, sizeof buf, fmt, index, value);
  return buf;
}

}  // namespace

EntryCheck check_l2_entry(const L2Format& fmt, uint64_t index, const L2Entry& e) {
  EntryCheck out;
  ClusterType type = fmt.cluster_type(e.entry);
  if (type != ClusterType::kCompressed && (e.entry & kL2ReservedMask)) {
    out.errors.push_back(message("ERROR found l2 entry with reserved bits set: %" PRIx64, e.entry));
  }
  switch (type) {
    case ClusterType::kCompressed:
      if (fmt.data_file) {
        out.errors.push_back(message("ERROR compressed cluster %" PRIu64
                                     " with data file, entry=0x%" PRIx64,
                                     index, e.entry));
        out.counted = false;
      } else if (e.bitmap) {
        out.errors.push_back(message("ERROR compressed cluster %" PRIu64
                                     " with non-zero subcluster allocation bitmap, "
                                     "entry=0x%" PRIx64,
                                     index, e.entry));
        out.counted = false;
      }
      break;
    case ClusterType::kNormal:
    case ClusterType::kZeroAlloc:
      if ((e.bitmap >> 32) & e.bitmap) {
        out.errors.push_back(message("ERROR offset=%" PRIx64
                                     ": Allocated cluster has corrupted subcluster "
                                     "allocation bitmap",
                                     e.entry & kOffsetMask));
      }
      break;
    case ClusterType::kUnallocated:
      if (e.bitmap & kBitmapAllAlloc) {
        out.errors.push_back("ERROR: Unallocated cluster has non-zero subcluster allocation map");
      }
      break;
    default:
      break;
  }
  return out;
}

}  // namespace strata::qcow2
