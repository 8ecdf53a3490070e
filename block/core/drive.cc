#include "strata/drive.h"

#include "base/sync.h"
#include "block/core/graph.h"

namespace strata {

// Shared by the Drive and its requests in flight, so that a request that
// outlives the Drive object still finds it.
struct Drive::State {
  State(Loop& loop, Child* e) : edge(e), idle(loop) {}
  // Stops new requests, waits for those in flight, then detaches (once).
  static Task<void> co_detach_when_idle(Graph& graph, std::shared_ptr<State> state) {
    state->closing = true;
    while (state->in_flight > 0) co_await state->idle.wait();
    if (Child* edge = std::exchange(state->edge, nullptr)) co_await graph.co_detach(edge);
  }
  Child* edge;
  bool closing = false;
  size_t in_flight = 0;
  CoQueue idle;
};

// One request: admitted while the drive is open, counted in flight until
// it is destroyed (at the end of the request's coroutine).
class Drive::Request {
 public:
  explicit Request(const std::shared_ptr<State>& state) {
    if (!state->edge || state->closing) return;
    state_ = state;
    state_->in_flight++;
  }
  ~Request() {
    if (state_ && --state_->in_flight == 0) state_->idle.wake_all();
  }
  Request(const Request&) = delete;
  Request& operator=(const Request&) = delete;
  explicit operator bool() const { return state_ != nullptr; }
  Child* edge() const { return state_->edge; }
  static Error closed() { return Error{ENOMEDIUM, "Drive is closed"}; }

 private:
  std::shared_ptr<State> state_;
};

namespace {
void drive_perms(const DriveOptions& o, uint64_t* perm, uint64_t* shared) {
  // As a guest device in QEMU: no resize permission held (a block job that
  // does not share it can run under the drive); co_resize takes it for the
  // duration of the resize.
  *perm = kPermConsistentRead | (o.writable ? uint64_t{kPermWrite} : 0);
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

Drive::Drive(Engine& engine, Child* edge)
    : engine_(engine), state_(std::make_shared<State>(engine.loop(), edge)) {}

Drive::~Drive() {
  // Not closed: detach in the background once the requests in flight are
  // done (nodes are flushed and closed there).
  if (state_->edge && !state_->closing) {
    engine_.loop().spawn(State::co_detach_when_idle(engine_.graph(), state_));
  }
}

Child* Drive::edge() const {
  return state_->edge;
}

Task<Result<void>> Drive::co_read(uint64_t offset, std::span<uint8_t> buf) {
  Request req(state_);
  if (!req) co_return Request::closed();
  co_return co_await req.edge()->co_pread(offset, buf);
}

Task<Result<void>> Drive::co_readv(uint64_t offset, const IoVec& iov) {
  Request req(state_);
  if (!req) co_return Request::closed();
  co_return co_await req.edge()->co_preadv(offset, iov, 0);
}

Task<Result<void>> Drive::co_write(uint64_t offset, std::span<const uint8_t> buf, bool fua) {
  Request req(state_);
  if (!req) co_return Request::closed();
  co_return co_await req.edge()->co_pwrite(offset, buf, fua ? uint32_t{kReqFua} : 0);
}

Task<Result<void>> Drive::co_writev(uint64_t offset, const IoVec& iov, bool fua) {
  Request req(state_);
  if (!req) co_return Request::closed();
  co_return co_await req.edge()->co_pwritev(offset, iov, fua ? uint32_t{kReqFua} : 0);
}

Task<Result<void>> Drive::co_write_zeroes(uint64_t offset, uint64_t bytes, bool may_unmap) {
  Request req(state_);
  if (!req) co_return Request::closed();
  uint32_t flags = may_unmap ? uint32_t{kReqMayUnmap} : 0;
  co_return co_await req.edge()->co_pwrite_zeroes(offset, bytes, flags);
}

Task<Result<void>> Drive::co_discard(uint64_t offset, uint64_t bytes) {
  Request req(state_);
  if (!req) co_return Request::closed();
  co_return co_await req.edge()->co_pdiscard(offset, bytes);
}

Task<Result<void>> Drive::co_flush() {
  Request req(state_);
  if (!req) co_return Request::closed();
  co_return co_await req.edge()->co_flush();
}

Task<Result<DriveExtent>> Drive::co_block_status(uint64_t offset, uint64_t bytes) {
  Request req(state_);
  if (!req) co_return Request::closed();
  auto st = co_await req.edge()->co_block_status(offset, bytes);
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
  Request req(state_);
  if (!req) co_return Request::closed();
  Graph& graph = engine_.graph();
  Child& edge = *req.edge();
  uint64_t perm = edge.perm(), shared = edge.shared();
  STRATA_CO_TRY(graph.set_root_perm(edge, perm | kPermResize, shared));
  auto r = co_await edge.co_truncate(size, false, prealloc);
  (void)graph.set_root_perm(edge, perm, shared);
  co_return r;
}

Task<void> Drive::co_close() {
  co_await State::co_detach_when_idle(engine_.graph(), state_);
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
  return state_->edge ? state_->edge->node()->size() : 0;
}
const std::string& Drive::node_name() const {
  static const std::string kNone;
  return state_->edge ? state_->edge->node()->name() : kNone;
}

}  // namespace strata
