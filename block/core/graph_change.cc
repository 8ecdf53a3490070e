#include "block/core/graph_change.h"

#include <algorithm>

#include "base/log.h"
#include "strata/engine.h"

namespace strata {

GraphChange::~GraphChange() {
  if (finished_) return;
  // co_finish() was skipped (a bug in the caller): leave the graph whole.
  if (!committed_) undo_all();
  drains_.clear();
}

Task<void> GraphChange::co_drain(std::vector<Node*> nodes, DrainScope scope) {
  drains_.push_back(co_await graph_.co_drain(std::move(nodes), scope));
}

void GraphChange::touch(Node* node) {
  if (std::find(touched_.begin(), touched_.end(), node) == touched_.end()) {
    touched_.push_back(node);
  }
}

Result<Child*> GraphChange::attach(Node& parent, Node& child, const std::string& name,
                                   uint32_t role) {
  if (&parent == &child || Graph::reaches(child, parent)) {
    return Error{EINVAL, "Making '" + child.name() + "' a child of '" + parent.name() +
                             "' would create a cycle"};
  }
  auto edge = std::make_unique<Child>(&parent, "node '" + parent.name() + "'", name, role, &child);
  Child* raw = edge.get();
  parent.children_.push_back(std::move(edge));
  child.parents_.push_back(raw);
  touch(&parent);
  touch(&child);
  undo_.push_back([this, raw, &parent] {
    graph_.unlink_parent(raw);
    std::erase_if(parent.children_, [raw](const auto& c) { return c.get() == raw; });
  });
  return raw;
}

namespace {
std::string holder_name(const Child& edge) {
  return edge.parent() ? edge.parent()->name() : edge.user();
}
}  // namespace

Result<void> GraphChange::retarget(Child& edge, Node& to) {
  Node* from = edge.node();
  if (from == &to) return {};
  if (edge.frozen()) {
    return Error{EPERM, "Cannot change frozen '" + edge.name() + "' link from '" +
                            holder_name(edge) + "' to '" + from->name() + "'"};
  }
  if (Node* p = edge.parent(); p && (p == &to || Graph::reaches(to, *p))) {
    return Error{EINVAL, "Making '" + to.name() + "' a " + edge.name() + " child of '" + p->name() +
                             "' would create a cycle"};
  }
  graph_.move_edge(&edge, &to);
  touch(from);
  touch(&to);
  if (edge.parent()) touch(edge.parent());
  released_.push_back(from);
  undo_.push_back([this, e = &edge, from] { graph_.move_edge(e, from); });
  return {};
}

Result<void> GraphChange::detach(Child& edge) {
  if (edge.frozen()) {
    return Error{EPERM, "Cannot change frozen '" + edge.name() + "' link from '" +
                            holder_name(edge) + "' to '" + edge.node()->name() + "'"};
  }
  Node* node = edge.node();
  Node* parent = edge.parent();
  size_t index = 0;
  if (parent) {
    auto& kids = parent->children_;
    auto it =
        std::find_if(kids.begin(), kids.end(), [&](const auto& c) { return c.get() == &edge; });
    index = it - kids.begin();
    detached_.push_back(std::move(*it));
    kids.erase(it);
  } else {
    auto& roots = graph_.roots_;
    auto it =
        std::find_if(roots.begin(), roots.end(), [&](const auto& c) { return c.get() == &edge; });
    detached_.push_back(std::move(*it));
    roots.erase(it);
  }
  graph_.unlink_parent(&edge);
  if (edge.owner() && node->quiesced()) edge.owner()->drained_end();
  touch(node);
  released_.push_back(node);
  undo_.push_back([this, e = &edge, node, parent, index] {
    auto it = std::find_if(detached_.begin(), detached_.end(),
                           [e](const auto& c) { return c.get() == e; });
    std::unique_ptr<Child> owned = std::move(*it);
    detached_.erase(it);
    if (parent) {
      parent->children_.insert(parent->children_.begin() + index, std::move(owned));
    } else {
      graph_.roots_.push_back(std::move(owned));
    }
    node->parents_.push_back(e);
    if (e->owner() && node->quiesced()) e->owner()->drained_begin();
  });
  return {};
}

Result<void> GraphChange::replace(Node& from, Node& to) {
  if (&from == &to) return {};
  std::vector<Child*> moving;
  for (Child* edge : from.parents_) {
    if (edge->stays_at_node()) continue;
    // Edges from `to` or from below it stay (an overlay keeps its backing).
    if (edge->parent() && (edge->parent() == &to || Graph::reaches(to, *edge->parent()))) continue;
    if (edge->frozen()) {
      return Error{EPERM, "Cannot change '" + edge->name() + "' link to '" + from.name() + "'"};
    }
    moving.push_back(edge);
  }
  for (Child* edge : moving) {
    graph_.move_edge(edge, &to);
    if (edge->parent()) touch(edge->parent());
  }
  touch(&from);
  touch(&to);
  undo_.push_back([this, moving, f = &from] {
    for (Child* edge : moving) graph_.move_edge(edge, f);
  });
  return {};
}

void GraphChange::set_flags(Node& node, const NodeFlags& flags) {
  NodeFlags old = node.flags();
  node.mutable_flags() = flags;
  touch(&node);
  undo_.push_back([n = &node, old] { n->mutable_flags() = old; });
}

void GraphChange::undo_all() {
  while (!undo_.empty()) {
    auto fn = std::move(undo_.back());
    undo_.pop_back();
    fn();
  }
}

Result<void> GraphChange::commit() {
  // Permissions were never updated for the new structure, so undoing the
  // structure is all a refused change needs.
  if (auto r = graph_.refresh_perms(touched_); !r) {
    undo_all();
    return r;
  }
  committed_ = true;
  return {};
}

void GraphChange::abort() {
  undo_all();
  if (!committed_) return;
  committed_ = false;
  // Back to permissions that held before; only a lock another process took
  // meanwhile can refuse them.
  if (auto r = graph_.refresh_perms(touched_); !r) {
    graph_.engine().logger().error("restoring permissions after an aborted graph change: " +
                                   r.error().message);
  }
}

Task<void> GraphChange::co_finish() {
  if (finished_) co_return;
  if (!committed_) undo_all();
  finished_ = true;
  drains_.clear();
  detached_.clear();
  if (!committed_) co_return;
  std::vector<std::pair<std::string, Node*>> released;
  for (Node* n : released_) {
    if (std::find_if(released.begin(), released.end(), [n](auto& p) { return p.second == n; }) ==
        released.end()) {
      released.emplace_back(n->name(), n);
    }
  }
  for (auto& [name, node] : released) {
    if (graph_.find(name) == node) co_await graph_.co_release_if_unused(node);
  }
}

}  // namespace strata
