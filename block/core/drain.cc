// Graph-level drains: a node with its parents, a subtree, or everything.
#include <algorithm>

#include "block/core/graph.h"

namespace strata {

DrainSection::~DrainSection() {
  end();
}

void DrainSection::end() {
  std::vector<Node*> nodes = std::move(nodes_);
  nodes_.clear();
  std::erase(graph_.sections_, this);
  for (Node* n : nodes) n->drain_end();
}

bool DrainSection::contains(const Node* node) const {
  return std::find(nodes_.begin(), nodes_.end(), node) != nodes_.end();
}

namespace {
void add_with_parents(Node* node, std::set<Node*>& out) {
  if (!out.insert(node).second) return;
  for (Child* p : node->parents()) {
    if (p->parent()) add_with_parents(p->parent(), out);
  }
}
}  // namespace

void Graph::drain_closure(Node* node, DrainScope scope, std::set<Node*>& out) const {
  add_with_parents(node, out);
  if (scope != DrainScope::kSubtree) return;
  for (const auto& c : node->children()) drain_closure(c->node(), scope, out);
}

Task<std::unique_ptr<DrainSection>> Graph::co_drain(std::vector<Node*> nodes, DrainScope scope) {
  std::set<Node*> closure;
  for (Node* n : nodes) drain_closure(n, scope, closure);
  std::unique_ptr<DrainSection> section(new DrainSection(*this));
  sections_.push_back(section.get());
  // In creation order, so that owners are told in a stable order.
  for (Node* n : order_) {
    if (!closure.count(n)) continue;
    n->quiesce();
    section->nodes_.push_back(n);
  }
  // Idle everywhere at once: a node that went idle may be busied again by
  // a request still in flight above it, so look again after every wait.
  for (;;) {
    Node* busy = nullptr;
    for (Node* n : section->nodes_) {
      if (!n->idle()) {
        busy = n;
        break;
      }
    }
    if (!busy) break;
    co_await busy->co_wait_idle();
  }
  co_return section;
}

Task<std::unique_ptr<DrainSection>> Graph::co_drain_all() {
  co_return co_await co_drain(order_, DrainScope::kParents);
}

}  // namespace strata
