// Permissions on a child edge, as QEMU's BLK_PERM_*: what a user takes
// (perm) and what it lets others take (shared).
#pragma once

#include <cstdint>
#include <string>

namespace strata {

enum Perm : uint64_t {
  kPermConsistentRead = 1u << 0,
  kPermWrite = 1u << 1,
  kPermWriteUnchanged = 1u << 2,
  kPermResize = 1u << 3,
  kPermAll = (1u << 4) - 1,
};
constexpr int kPermCount = 4;

// "consistent read, write" for a perm mask (QEMU's names).
std::string perm_names(uint64_t perms);
const char* perm_name(int bit);

}  // namespace strata
