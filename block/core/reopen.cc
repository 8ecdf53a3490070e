#include "block/core/reopen.h"

#include "block/core/graph_change.h"

namespace strata {

namespace {
// `node` and the implicit children below it that only it uses.
void collect(Node& node, std::vector<Node*>& out) {
  out.push_back(&node);
  for (const auto& c : node.children()) {
    Node* child = c->node();
    if (child->monitor_owned() || child->parents().size() != 1) continue;
    if (c->role() & kRoleCow) continue;  // a backing node keeps its own flags
    collect(*child, out);
  }
}
}  // namespace

Task<Result<void>> co_set_read_only(Graph& graph, Node& node, bool read_only) {
  if (node.read_only() == read_only) co_return Result<void>{};
  std::vector<Node*> nodes;
  collect(node, nodes);
  GraphChange change(graph);
  std::vector<Node*> drained = nodes;
  co_await change.co_drain(std::move(drained));
  size_t prepared = 0;
  Result<void> r;
  std::vector<NodeFlags> flags;
  for (Node* n : nodes) {
    NodeFlags f = n->flags();
    f.read_only = read_only;
    flags.push_back(f);
  }
  for (; prepared < nodes.size(); prepared++) {
    r = co_await nodes[prepared]->driver().co_reopen_prepare(flags[prepared]);
    if (!r) break;
  }
  if (r) {
    for (size_t i = 0; i < nodes.size(); i++) change.set_flags(*nodes[i], flags[i]);
    r = change.commit();
  }
  for (size_t i = 0; i < prepared; i++) {
    if (r) {
      nodes[i]->driver().reopen_commit();
    } else {
      nodes[i]->driver().reopen_abort();
    }
  }
  for (size_t i = 0; i < prepared; i++) co_await nodes[i]->driver().co_reopen_finish(bool(r));
  co_await change.co_finish();
  co_return r;
}

}  // namespace strata
