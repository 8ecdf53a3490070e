#include "block/core/driver.h"

#include "block/core/node.h"

namespace strata {

Task<Result<void>> Driver::co_pwritev(uint64_t, const IoVec&, uint32_t) {
  co_return Error{EROFS, "Driver '" + node().driver_name() + "' does not support writes"};
}

Task<Result<void>> Driver::co_pwrite_zeroes(uint64_t, uint64_t, uint32_t) {
  co_return Error{ENOTSUP, "write-zeroes not supported"};
}

Task<Result<void>> Driver::co_splice_read(uint64_t, uint64_t, Pipe&) {
  co_return Error{ENOTSUP, "Driver '" + node().driver_name() + "' does not support splice reads"};
}

Task<Result<void>> Driver::co_pdiscard(uint64_t, uint64_t) {
  co_return Result<void>{};
}

Task<Result<void>> Driver::co_flush() {
  co_return Result<void>{};
}

Task<Result<BlockStatus>> Driver::co_block_status(uint64_t offset, uint64_t bytes) {
  BlockStatus st;
  st.flags = kStatusData | kStatusAllocated;
  st.bytes = bytes;
  co_return st;
}

Task<Result<void>> Driver::co_truncate(uint64_t, bool, Preallocation) {
  co_return Error{ENOTSUP, "Driver '" + node().driver_name() + "' does not support resizing"};
}

Task<Result<void>> Driver::co_reopen_prepare(const NodeFlags& flags) {
  const NodeFlags& now = node().flags();
  if (flags.read_only != now.read_only) {
    co_return Error{ENOTSUP, "Driver '" + node().driver_name() + "' does not support reopening " +
                                 (flags.read_only ? "read-only" : "read-write")};
  }
  if (flags.cache_direct != now.cache_direct) {
    co_return Error{EINVAL, "Cannot change the option 'cache.direct'"};
  }
  co_return Result<void>{};
}

Task<void> Driver::co_reopen_finish(bool) {
  co_return;
}

Task<Result<void>> accept_any_reopen() {
  co_return Result<void>{};
}

std::string Driver::filename() const {
  if (Child* f = node().file()) return f->node()->driver().filename();
  return "";
}

void filter_default_perms(uint64_t perm, uint64_t shared, uint64_t* nperm, uint64_t* nshared) {
  constexpr uint64_t kPassThrough =
      kPermConsistentRead | kPermWrite | kPermWriteUnchanged | kPermResize;
  *nperm = perm & kPassThrough;
  *nshared = (shared & kPassThrough) | (kPermAll & ~kPassThrough);
}

void storage_default_perms(bool writable, uint32_t role, uint64_t perm, uint64_t shared,
                           uint64_t* nperm, uint64_t* nshared) {
  filter_default_perms(perm, shared, &perm, &shared);
  if (role & kRoleMetadata) {
    // A format driver may touch metadata even when nobody writes to it, and
    // nobody else may write or resize the file under it.
    if (writable) perm |= kPermWrite | kPermResize;
    perm |= kPermConsistentRead;
    shared &= ~(kPermWrite | kPermResize);
  }
  if (role & kRoleData) {
    shared &= ~kPermResize;
    if (perm & kPermWriteUnchanged) perm |= kPermWrite;
    if (perm & kPermWrite) perm |= kPermResize;
  }
  *nperm = perm;
  *nshared = shared;
}

void cow_default_perms(uint64_t perm, uint64_t shared, uint64_t* nperm, uint64_t* nshared) {
  // A backing file is only read; it may change under us only if our own
  // users accept changing data.
  *nperm = perm & kPermConsistentRead;
  uint64_t s = (shared & kPermWrite) ? (kPermWrite | kPermResize) : 0;
  *nshared = s | kPermConsistentRead | kPermWriteUnchanged;
}

void Driver::child_perm(const Child& child, uint64_t perm, uint64_t shared, uint64_t* nperm,
                        uint64_t* nshared) const {
  uint32_t role = child.role();
  if (role & kRoleFiltered) {
    filter_default_perms(perm, shared, nperm, nshared);
  } else if (role & (kRoleData | kRoleMetadata)) {
    storage_default_perms(!node().read_only(), role, perm, shared, nperm, nshared);
  } else if (role & kRoleCow) {
    cow_default_perms(perm, shared, nperm, nshared);
  } else {
    *nperm = perm;
    *nshared = shared;
  }
}

}  // namespace strata
