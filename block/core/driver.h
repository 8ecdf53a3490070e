// Driver: the behaviour of one node (a format, a protocol or a filter).
//
// Contract: the I/O dispatcher (block/core/io.cc) calls a driver only with
// requests that are inside bounds where bounds apply, aligned to
// limits().request_alignment and no longer than limits().max_transfer; it
// handles read-modify-write, splitting, FUA emulation, hooks, dirty marking
// and statistics, so drivers do none of that. A driver accesses storage only
// through its node's children. Defaults: writes fail with EROFS, write-zeroes
// with ENOTSUP (the dispatcher then writes zero buffers), discard does
// nothing, flush succeeds (children are flushed by the dispatcher), block
// status reports allocated data, splice reads are not supported.
// Thread rules: loop-thread only.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>

#include "block/core/options.h"
#include "block/core/types.h"
#include "strata/iovec.h"
#include "strata/result.h"
#include "strata/task.h"

namespace strata {

class Child;
class ImageOps;
class SnapshotApi;
class Node;
class OpenContext;
class Pipe;
struct NodeFlags;

class Driver {
 public:
  virtual ~Driver() = default;

  // Opens the node: parses driver options, opens children through `ctx`.
  virtual Task<Result<void>> co_open(OpenContext& ctx) = 0;
  // Releases resources; the node is drained and its bitmaps stored already.
  virtual Task<void> co_close() { co_return; }

  virtual Task<Result<void>> co_preadv(uint64_t offset, const IoVec& iov, uint32_t flags) = 0;
  // Appends the data of [offset, offset + bytes) to `pipe`, in order,
  // without copying it where the storage allows (base/pipe.h); the pipe has
  // room for all of it. ENOTSUP means the driver cannot and appended
  // nothing: the caller reads with co_preadv instead. EAGAIN means the
  // pipe filled up (its page slots, base/pipe.h): the caller empties it and
  // reads with co_preadv. Any other error may leave part of the data in the
  // pipe. The default is ENOTSUP.
  virtual Task<Result<void>> co_splice_read(uint64_t offset, uint64_t bytes, Pipe& pipe);
  virtual Task<Result<void>> co_pwritev(uint64_t offset, const IoVec& iov, uint32_t flags);
  virtual Task<Result<void>> co_pwrite_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags);
  virtual Task<Result<void>> co_pdiscard(uint64_t offset, uint64_t bytes);
  virtual Task<Result<void>> co_flush();
  virtual Task<Result<BlockStatus>> co_block_status(uint64_t offset, uint64_t bytes);
  virtual Task<Result<void>> co_truncate(uint64_t size, bool exact, Preallocation prealloc);

  // blockdev-reopen, in QEMU's phases: co_reopen_prepare() readies the
  // driver for `flags` (the node still has its old flags) without changing
  // what it serves; then exactly one of reopen_commit() / reopen_abort()
  // follows. The default accepts what the dispatcher applies alone
  // (detect-zeroes, discard, force-share, auto-read-only, cache.no-flush)
  // and refuses a change of read-only or cache.direct, which a driver with
  // files or metadata must handle itself; drivers without such state
  // return accept_any_reopen().
  virtual Task<Result<void>> co_reopen_prepare(const NodeFlags& flags);
  virtual void reopen_commit() {}
  virtual void reopen_abort() {}
  // After every node of the reopen committed (`committed`) or aborted, and
  // the children's new files and permissions are in place: the driver may
  // do I/O that needs them (QEMU's bdrv_reopen_commit_post; qcow2 marks its
  // bitmaps in-use again). Called once for every node whose prepare
  // succeeded; it cannot fail the reopen any more.
  virtual Task<void> co_reopen_finish(bool committed);

  // The node's drain began (the outermost begin) or ended, as QEMU's
  // bdrv_drain_begin/end: a driver that holds requests back (throttle)
  // lets them go while the node is drained, so that the drain can end.
  virtual void drained_begin() {}
  virtual void drained_end() {}

  virtual uint64_t size() const = 0;
  virtual Limits limits() const { return {}; }

  // Permissions this node needs on `child` given what its parents take and
  // share (cumulative). The default follows QEMU's rules by child role.
  virtual void child_perm(const Child& child, uint64_t perm, uint64_t shared, uint64_t* nperm,
                          uint64_t* nshared) const;
  // Protocol drivers: may the node take these permissions (image locks)?
  virtual Result<void> check_perm(uint64_t perm, uint64_t shared) { return {}; }
  virtual void set_perm(uint64_t perm, uint64_t shared) {}

  // Allocation unit of a format (QEMU's BlockDriverInfo cluster_size), or 0
  // when it has none; the default granularity of dirty bitmaps follows it.
  virtual uint64_t cluster_size() const { return 0; }
  // Driver-specific image information (QEMU's "format-specific"), or null.
  virtual nlohmann::json format_specific() const { return nullptr; }
  // Members this driver adds to its node's entry in query-named-block-nodes
  // and query-block (Strata extensions, named "x-..."), as a JSON object, or
  // null for none. The NBD client reports its link state this way.
  virtual nlohmann::json block_info_extension() const { return nullptr; }
  // The file name the node stands for, as QEMU reports it.
  virtual std::string filename() const;
  // Whether writes with kReqWriteCompressed can be stored compressed
  // (QEMU's bdrv_supports_compressed_writes; filters ask their child).
  virtual bool supports_compressed_writes() const { return false; }
  // For filters: the child all requests go to.
  virtual Child* filtered_child() const { return nullptr; }
  // Formats that can have a backing file: unallocated ranges without one
  // read as zeroes.
  virtual bool supports_backing() const { return false; }
  // Format operations beyond I/O (block/core/image_ops.h), or null.
  virtual ImageOps* image_ops() { return nullptr; }
  // The point-in-time view this node keeps of its child
  // (block/core/snapshot_api.h: copy-before-write), or null.
  virtual SnapshotApi* snapshot_api() { return nullptr; }

  Node& node() const { return *node_; }
  void attach(Node* node) { node_ = node; }

 private:
  Node* node_ = nullptr;
};

// For drivers whose state does not depend on the node flags (raw, null,
// filters): every reopen is fine.
Task<Result<void>> accept_any_reopen();

// QEMU's default permission rules, usable by drivers that override child_perm.
void filter_default_perms(uint64_t perm, uint64_t shared, uint64_t* nperm, uint64_t* nshared);
void storage_default_perms(bool writable, uint32_t role, uint64_t perm, uint64_t shared,
                           uint64_t* nperm, uint64_t* nshared);
void cow_default_perms(uint64_t perm, uint64_t shared, uint64_t* nperm, uint64_t* nshared);

}  // namespace strata
