#include "strata/drive.h"

#include "block/core/graph.h"

namespace strata {

namespace {
void drive_perms(const DriveOptions& o, uint64_t* perm, uint64_t* shared) {
  // As a guest device in QEMU: no resize permission held (a block job that
  // does not share it can run under the drive); co_resize takes it for the
  // duration of the resize.
  *perm = kPermConsistentRead | (o.writable ? kPermWrite : 0);
  *shared =
      kPermConsistentRead | kPermWriteUnchanged | (o.share_rw ? (kPermWrite | kPermResize) : 0);
}
}  // namespace

Task<Result<std::unique_ptr<Drive>>> Drive::co_open(Engine& engine, nlohmann::json options,
                                                    DriveOptions drive_options) {
  if (options.is_object() && !drive_options.writable && !options.contains("read-only")) {
    options["read-only"] = true;
  }
  auto node = co_await engine.graph().co_add(std::move(options), /*implicit=*/true);
  if (!node) co_return std::move(node).error();
  uint64_t perm, shared;
  drive_perms(drive_options, &perm, &shared);
  auto edge = engine.graph().attach_root(**node, drive_options.user, perm, shared);
  if (!edge) {
    co_await engine.graph().co_release_if_unused(*node);
    co_return std::move(edge).error();
  }
  co_return std::unique_ptr<Drive>(new Drive(engine, *edge));
}

Result<std::unique_ptr<Drive>> Drive::attach(Engine& engine, const std::string& node_name,
                                             DriveOptions drive_options) {
  Node* node = engine.graph().find(node_name);
  if (!node) return Error{ENOENT, "Node '" + node_name + "' not found"};
  uint64_t perm, shared;
  drive_perms(drive_options, &perm, &shared);
  STRATA_TRY_ASSIGN(Child * edge,
                    engine.graph().attach_root(*node, drive_options.user, perm, shared));
  return std::unique_ptr<Drive>(new Drive(engine, edge));
}

Drive::~Drive() {
  // Not closed: detach in the background (nodes are flushed and closed there).
  if (edge_) engine_.loop().spawn(engine_.graph().co_detach(std::exchange(edge_, nullptr)));
}

Task<Result<void>> Drive::co_read(uint64_t offset, std::span<uint8_t> buf) {
  co_return co_await edge_->co_pread(offset, buf);
}

Task<Result<void>> Drive::co_readv(uint64_t offset, const IoVec& iov) {
  co_return co_await edge_->co_preadv(offset, iov, 0);
}

Task<Result<void>> Drive::co_write(uint64_t offset, std::span<const uint8_t> buf, bool fua) {
  co_return co_await edge_->co_pwrite(offset, buf, fua ? uint32_t{kReqFua} : 0);
}

Task<Result<void>> Drive::co_writev(uint64_t offset, const IoVec& iov, bool fua) {
  co_return co_await edge_->co_pwritev(offset, iov, fua ? uint32_t{kReqFua} : 0);
}

Task<Result<void>> Drive::co_write_zeroes(uint64_t offset, uint64_t bytes, bool may_unmap) {
  co_return co_await edge_->co_pwrite_zeroes(offset, bytes, may_unmap ? uint32_t{kReqMayUnmap} : 0);
}

Task<Result<void>> Drive::co_discard(uint64_t offset, uint64_t bytes) {
  co_return co_await edge_->co_pdiscard(offset, bytes);
}

Task<Result<void>> Drive::co_flush() {
  co_return co_await edge_->co_flush();
}

Task<Result<DriveExtent>> Drive::co_block_status(uint64_t offset, uint64_t bytes) {
  auto st = co_await edge_->co_block_status(offset, bytes);
  if (!st) co_return std::move(st).error();
  DriveExtent e;
  e.offset = offset;
  e.length = st->bytes;
  e.data = st->flags & kStatusData;
  e.zero = st->flags & kStatusZero;
  e.allocated = st->flags & kStatusAllocated;
  co_return e;
}

Task<Result<void>> Drive::co_resize(uint64_t size) {
  co_return co_await co_resize(size, Preallocation::kOff);
}

Task<Result<void>> Drive::co_resize(uint64_t size, Preallocation prealloc) {
  Graph& graph = engine_.graph();
  uint64_t perm = edge_->perm(), shared = edge_->shared();
  STRATA_CO_TRY(graph.set_root_perm(*edge_, perm | kPermResize, shared));
  auto r = co_await edge_->co_truncate(size, false, prealloc);
  (void)graph.set_root_perm(*edge_, perm, shared);
  co_return r;
}

Task<void> Drive::co_close() {
  if (!edge_) co_return;
  Child* edge = std::exchange(edge_, nullptr);
  co_await engine_.graph().co_detach(edge);
}

Result<void> Drive::read(uint64_t offset, std::span<uint8_t> buf) {
  return engine_.run(co_read(offset, buf));
}
Result<void> Drive::write(uint64_t offset, std::span<const uint8_t> buf, bool fua) {
  return engine_.run(co_write(offset, buf, fua));
}
Result<void> Drive::write_zeroes(uint64_t offset, uint64_t bytes, bool may_unmap) {
  return engine_.run(co_write_zeroes(offset, bytes, may_unmap));
}
Result<void> Drive::discard(uint64_t offset, uint64_t bytes) {
  return engine_.run(co_discard(offset, bytes));
}
Result<void> Drive::flush() {
  return engine_.run(co_flush());
}
void Drive::close() {
  engine_.run(co_close());
}

uint64_t Drive::size() const {
  return edge_->node()->size();
}
const std::string& Drive::node_name() const {
  return edge_->node()->name();
}

}  // namespace strata
