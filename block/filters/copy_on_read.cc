// copy-on-read: the filter (QEMU's block/copy-on-read.c) and the engine API
// that inserts and drops it. The copy itself is the child's dispatcher's
// work (kReqCopyOnRead, block/core/io.cc).
#include "block/filters/copy_on_read.h"

#include "block/core/block_status.h"
#include "block/core/filter.h"

namespace strata {

namespace {

// What the filter passes through from its parents; it shares what does not
// change data with everyone (QEMU's PERM_PASSTHROUGH / PERM_UNCHANGED).
constexpr uint64_t kPassThrough = kPermConsistentRead | kPermWrite | kPermResize;
constexpr uint64_t kUnchanged = kPermAll & ~kPassThrough;

// The node below `node`: its backing file, or a filter's child.
Node* below(const Node& node) {
  Child* c = node.backing();
  if (!c) c = node.filtered();
  return c ? c->node() : nullptr;
}

class CopyOnReadDriver final : public FilterDriver {
 public:
  Task<Result<void>> co_open(OpenContext& ctx) override {
    STRATA_CO_TRY(co_await FilterDriver::co_open(ctx));
    graph_ = &ctx.graph();
    bottom_ = opt_string(ctx.options(), "bottom");
    co_return check_bottom();
  }

  Task<Result<void>> co_preadv(uint64_t offset, const IoVec& iov, uint32_t flags) override {
    if (bottom_.empty()) return file_->co_preadv(offset, iov, flags | kReqCopyOnRead);
    return co_read_above_bottom(offset, iov, flags);
  }

  // A splice read would not be copied: the caller reads with co_preadv.
  Task<Result<void>> co_splice_read(uint64_t, uint64_t, Pipe&) override {
    co_return Error{ENOTSUP, "copy-on-read filters do not splice"};
  }

  void child_perm(const Child&, uint64_t perm, uint64_t shared, uint64_t* nperm,
                  uint64_t* nshared) const override {
    *nperm = (perm & kPassThrough) | kPermWriteUnchanged;
    *nshared = (shared & kPassThrough) | kUnchanged;
  }

 private:
  // QEMU's rules for `bottom`: an existing node, not a filter, and (Strata
  // adds) in the backing chain below `file` (QEMU 7.2 loops forever on a
  // node outside the chain).
  Result<void> check_bottom() const {
    if (bottom_.empty()) return {};
    Node* bottom = graph_->find(bottom_);
    if (!bottom) return Error{EINVAL, "Bottom node '" + bottom_ + "' not found"};
    if (bottom->driver().filtered_child()) {
      return Error{EINVAL, "Bottom node '" + bottom_ + "' is a filter"};
    }
    for (Node* n = file_->node(); n; n = below(*n)) {
      if (n == bottom) return {};
    }
    return Error{EINVAL, "Bottom node '" + bottom_ + "' is not in the backing chain of '" +
                             file_->node()->name() + "'"};
  }

  // QEMU's cor_co_preadv_part with a bottom node: ranges the top layer
  // allocates are plain reads, the others are copied when a layer between
  // the top's backing file and `bottom` (included) allocates them.
  Task<Result<void>> co_read_above_bottom(uint64_t offset, IoVec iov, uint32_t flags) {
    for (uint64_t done = 0; done < iov.size();) {
      uint64_t pos = offset + done, left = iov.size() - done;
      auto st = co_await file_->co_block_status(pos, left);
      uint64_t n = st && st->bytes ? std::min(st->bytes, left) : left;
      uint32_t f = flags;
      if (!st || !(st->flags & kStatusAllocated)) {
        auto above = co_await co_allocated_above(pos, n);
        n = above.second;
        if (above.first) f |= kReqCopyOnRead;
      }
      STRATA_CO_TRY(co_await file_->co_preadv(pos, iov.slice(done, n), f));
      done += n;
    }
    co_return Result<void>{};
  }

  // Whether a layer from the top's backing file down to `bottom` (included)
  // allocates [pos, pos + bytes), and for how long the answer holds
  // (co_is_allocated_above). Errors count as allocated (copying too much is
  // harmless). A bottom that left the chain (a graph change) means the
  // whole chain.
  Task<std::pair<bool, uint64_t>> co_allocated_above(uint64_t pos, uint64_t bytes) {
    Node* top = file_->node();
    Node* next = next_layer(*top);
    if (!next || top->name() == bottom_ || pos >= next->size()) {
      co_return std::pair<bool, uint64_t>{false, bytes};
    }
    Node* bottom = nullptr;
    for (Node* n = next; n && !bottom; n = next_layer(*n)) {
      if (n->name() == bottom_) bottom = n;
    }
    auto a = co_await co_is_allocated_above(*next, bottom, true, pos, bytes);
    if (!a) co_return std::pair<bool, uint64_t>{true, bytes};
    co_return std::pair<bool, uint64_t>{a->allocated, a->bytes ? std::min(a->bytes, bytes) : bytes};
  }

  Graph* graph_ = nullptr;
  std::string bottom_;
};

}  // namespace

Task<Result<Node*>> co_insert_copy_on_read(Graph& graph, Node& node, CopyOnReadOptions options) {
  nlohmann::json opts = {{"driver", "copy-on-read"}, {"file", node.name()}};
  if (!options.node_name.empty()) opts["node-name"] = options.node_name;
  if (!options.bottom.empty()) opts["bottom"] = options.bottom;
  STRATA_CO_TRY_ASSIGN(Node * filter, co_await graph.co_add(opts, options.node_name.empty()));
  filter->set_monitor_owned(false);  // the inserter's, as QEMU's job filters
  auto moved = co_await graph.co_replace_node(node, *filter);
  if (!moved) {
    co_await graph.co_release_if_unused(filter);
    co_return std::move(moved).error();
  }
  co_return filter;
}

Task<Result<void>> co_drop_copy_on_read(Graph& graph, Node& filter) {
  if (filter.driver_name() != "copy-on-read" || !filter.file()) {
    co_return Error{EINVAL, "'" + filter.name() + "' is not a copy-on-read filter"};
  }
  STRATA_CO_TRY(co_await graph.co_replace_node(filter, *filter.file()->node()));
  co_await graph.co_release_if_unused(&filter);
  co_return Result<void>{};
}

void register_copy_on_read_filter(DriverRegistry& registry) {
  registry.add(DriverSpec{"copy-on-read",
                          DriverKind::kFilter,
                          {{"file", OptType::kChild, true}, {"bottom", OptType::kString}},
                          [] { return std::make_unique<CopyOnReadDriver>(); }});
}

}  // namespace strata
