// Plain types shared by the block layer: request flags, block status,
// driver limits, preallocation modes and child roles.
#pragma once

#include <cstdint>
#include <string>

namespace strata {

class Node;

// Flags on write, write-zeroes and read requests.
enum RequestFlag : uint32_t {
  kReqFua = 1u << 0,              // write: stable on completion
  kReqMayUnmap = 1u << 1,         // write-zeroes: may deallocate
  kReqNoFallback = 1u << 2,       // write-zeroes: fail with ENOTSUP instead of writing zeroes
  kReqWriteCompressed = 1u << 3,  // write: store compressed (formats that can; whole clusters)
  // read: what this node does not allocate is written into it, unchanged,
  // as it is read (QEMU's BDRV_REQ_COPY_ON_READ; the copy-on-read filter).
  kReqCopyOnRead = 1u << 4,
  // write, write-zeroes: waits for every overlapping request in flight on
  // this node, reads included, and later ones wait for it (QEMU's
  // BDRV_REQ_SERIALISING; copy-before-write into an image that reads its
  // unallocated clusters from the very node being written). The dispatcher
  // consumes it: drivers never see it.
  kReqSerialising = 1u << 5,
};

// Block status flags (as QEMU's BDRV_BLOCK_*).
enum StatusFlag : uint32_t {
  kStatusData = 1u << 0,         // reads come from storage at this layer or below
  kStatusZero = 1u << 1,         // reads as zeroes
  kStatusOffsetValid = 1u << 2,  // `map_offset` in `map_node` holds the data
  kStatusAllocated = 1u << 3,    // this layer decides the content (not the backing file)
  kStatusEof = 1u << 4,          // the range reaches the end of the node
  kStatusRecurse = 1u << 5,      // driver answer: ask `map_node` at `map_offset`
  // Driver answer with kStatusData: whether the bytes read as zeroes is
  // `map_node`'s answer at `map_offset` (QEMU's BDRV_BLOCK_RECURSE).
  kStatusZeroFromMap = 1u << 6,
};

struct BlockStatus {
  uint32_t flags = 0;
  uint64_t bytes = 0;       // length of the extent that shares this status
  uint64_t map_offset = 0;  // with kStatusOffsetValid / kStatusRecurse
  Node* map_node = nullptr;
  // Layer that allocated the extent: 1 this node, 2 its backing, ...; 0 none.
  uint32_t depth = 0;
};

// What a driver can do, and how requests must be shaped for it.
struct Limits {
  uint32_t request_alignment = 1;  // offsets and lengths must be multiples
  uint64_t max_transfer = 0;       // 0: unlimited
  uint64_t opt_transfer = 0;
  uint32_t discard_alignment = 1;
  uint64_t max_discard = 0;  // 0: unlimited
  uint32_t zeroes_alignment = 1;
  uint64_t max_zeroes = 0;  // 0: unlimited
  // The unaligned head and tail of a write-zeroes request are offered to the
  // driver first (as QEMU does); only on ENOTSUP are they written as zeroes.
  bool try_unaligned_zeroes = false;
  bool supports_fua = false;  // kReqFua handled by the driver itself
  bool serialize_overlapping_writes = false;
};

enum class Preallocation { kOff, kMetadata, kFalloc, kFull };
const char* preallocation_name(Preallocation p);
bool parse_preallocation(const std::string& s, Preallocation* out);

// What a child edge is for (as QEMU's BdrvChildRole); a bit mask.
enum ChildRole : uint32_t {
  kRoleData = 1u << 0,
  kRoleMetadata = 1u << 1,
  kRoleFiltered = 1u << 2,
  kRoleCow = 1u << 3,
  kRolePrimary = 1u << 4,
  kRoleImage = kRoleData | kRoleMetadata | kRolePrimary,  // format node's file
  kRoleFilterChild = kRoleFiltered | kRolePrimary,
};

}  // namespace strata

namespace strata {

// Operations a job can block on the nodes it uses (QEMU's BlockOpType).
enum class BlockOp : uint32_t {
  kBackupSource,
  kBackupTarget,
  kChange,
  kCommitSource,
  kCommitTarget,
  kDriveDel,
  kExternalSnapshot,
  kInternalSnapshot,
  kInternalSnapshotDelete,
  kMirrorSource,
  kMirrorTarget,
  kResize,
  kStream,
  kReplace,
};
constexpr uint32_t block_op_bit(BlockOp op) {
  return 1u << static_cast<uint32_t>(op);
}

}  // namespace strata
