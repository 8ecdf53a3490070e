#include "block/core/perm.h"

namespace strata {

const char* perm_name(int bit) {
  switch (bit) {
    case 0: return "consistent read";
    case 1: return "write";
    case 2: return "write unchanged";
    case 3: return "resize";
  }
  return "?";
}

std::string perm_names(uint64_t perms) {
  std::string out;
  for (int i = 0; i < kPermCount; i++) {
    if (!(perms & (1ull << i))) continue;
    if (!out.empty()) out += ", ";
    out += perm_name(i);
  }
  return out;
}

}  // namespace strata
