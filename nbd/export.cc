#include "nbd/export.h"

#include <algorithm>

#include "nbd/protocol.h"
#include "nbd/wire.h"
#include "strata/engine.h"

namespace strata::nbd {

Export::Export(Graph& graph, ExportOptions options)
    : graph_(graph), options_(std::move(options)), clients_gone_(graph.engine().loop()) {}

namespace {

// Where the i-th bitmap is looked for: its given node, or the exported one.
Result<Node*> bitmap_holder(Graph& graph, Node& exported, const ExportOptions& o, size_t i) {
  if (i >= o.bitmap_nodes.size() || o.bitmap_nodes[i].empty()) return &exported;
  const std::string& name = o.bitmap_nodes[i];
  Node* n = graph.find(name);
  if (!n) return Error{ENOENT, "Cannot find device='" + name + "' nor node-name='" + name + "'"};
  return n;
}

}  // namespace

Result<std::unique_ptr<Export>> Export::create(Graph& graph, ExportOptions options,
                                               const BitmapResolver& resolver) {
  if (options.id.empty()) options.id = options.name;
  if (!valid_string(options.name)) return Error{EINVAL, "export name is too long or has NUL"};
  if (options.description.size() > kMaxStringSize) {
    return Error{EINVAL, "export description is too long"};
  }
  Node* node = graph.find(options.node_name);
  if (!node) {
    return Error{ENOENT, "Cannot find device='' nor node-name='" + options.node_name + "'"};
  }
  if (options.writable && node->read_only()) {
    return Error{EPERM, "Cannot export read-only node as writable"};
  }
  std::unique_ptr<Export> exp(new Export(graph, std::move(options)));
  const ExportOptions& o = exp->options_;
  for (size_t i = 0; i < o.bitmaps.size(); i++) {
    const std::string& name = o.bitmaps[i];
    if (!resolver) return Error{ENOTSUP, "Dirty bitmaps are not available to NBD exports"};
    STRATA_TRY_ASSIGN(Node * holder, bitmap_holder(graph, *node, o, i));
    auto view = resolver(*holder, name, o.writable);
    if (!view) return std::move(view).error();
    exp->bitmaps_.push_back(std::move(*view));
    exp->catalog_.bitmaps.push_back(name);
  }
  exp->catalog_.allocation_depth = o.allocation_depth;
  uint64_t perm = kPermConsistentRead | (o.writable ? uint64_t{kPermWrite} : 0u);
  // Clients see a fixed size: nobody may resize the node under them.
  uint64_t shared = kPermAll & ~uint64_t{kPermResize};
  auto root = graph.attach_root(*node, "NBD export '" + o.name + "'", perm, shared);
  if (!root) return std::move(root).error();
  exp->root_ = *root;
  return exp;
}

Export::~Export() = default;

uint16_t Export::transmission_flags(bool structured, bool extended, bool contexts) const {
  uint16_t flags = kFlagHasFlags | kFlagSendFlush | kFlagSendFua | kFlagSendCache;
  if (options_.writable) {
    flags |= kFlagSendTrim | kFlagSendWriteZeroes | kFlagSendFastZero;
  } else {
    flags |= kFlagReadOnly;
  }
  if (structured || extended) flags |= kFlagSendDf;
  if (options_.multi_conn) flags |= kFlagCanMultiConn;
  if (extended && contexts) flags |= kFlagBlockStatusPayload;
  return flags;
}

uint32_t Export::min_block_size() const {
  Node* n = node();
  return n ? std::max<uint32_t>(1, n->limits().request_alignment) : 1;
}

bool Export::attach_client(ExportClient* client) {
  if (closing_) return false;
  clients_.insert(client);
  return true;
}

void Export::detach_client(ExportClient* client) {
  clients_.erase(client);
  if (clients_.empty()) clients_gone_.wake_all();
}

void Export::begin_close() {
  closing_ = true;
  std::vector<ExportClient*> current(clients_.begin(), clients_.end());
  for (ExportClient* c : current) c->disconnect();
}

Task<Result<void>> Export::co_close(RemoveMode mode) {
  if (closed_) co_return Result<void>{};
  if (mode == RemoveMode::kSafe && !clients_.empty()) {
    co_return Error{EBUSY, "export '" + options_.id + "' still in use"};
  }
  begin_close();
  co_await co_release_held_requests();
  while (!clients_.empty()) co_await clients_gone_.wait();
  if (closed_) co_return Result<void>{};
  closed_ = true;
  bitmaps_.clear();
  if (root_) {
    Child* root = std::exchange(root_, nullptr);
    co_await graph_.co_detach(root);
  }
  co_return Result<void>{};
}

// A drained node lets the requests it holds back go (Driver::drained_begin),
// and the drain returns once the clients' requests in the subtree are done.
Task<void> Export::co_release_held_requests() {
  if (clients_.empty() || !root_) co_return;
  std::vector<Node*> nodes{root_->node()};
  auto section = co_await graph_.co_drain(std::move(nodes), DrainScope::kSubtree);
  section->end();
}

}  // namespace strata::nbd
