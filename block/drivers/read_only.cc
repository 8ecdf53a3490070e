#include "block/drivers/read_only.h"

namespace strata {

Result<void> require_read_only(Node& node, const std::string& format) {
  NodeFlags& flags = node.mutable_flags();
  if (flags.read_only) return {};
  if (flags.auto_read_only) {
    flags.read_only = true;
    return {};
  }
  return Error{EROFS, "Strata cannot write " + format + " images (read-only driver)"};
}

}  // namespace strata
