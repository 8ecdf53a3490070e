// Permission updates and co_replace_node: derive every edge's permissions from
// the users down, check conflicts and image locks, then commit or leave the
// graph untouched.
#include <map>
#include <set>

#include "block/core/graph.h"
#include "block/core/graph_change.h"

namespace strata {

class PermissionUpdate {
 public:
  Result<void> run(const std::vector<Node*>& changed) {
    for (Node* n : changed) STRATA_TRY(visit(n, 0));
    for (Node* n : visited_) STRATA_TRY(check(n));
    commit();
    return {};
  }

 private:
  std::pair<uint64_t, uint64_t> edge(const Child* c) const {
    auto it = edges_.find(c);
    return it != edges_.end() ? it->second : std::make_pair(c->perm_, c->shared_);
  }
  std::pair<uint64_t, uint64_t> cumulative(const Node* n) const {
    uint64_t perm = 0, shared = kPermAll;
    for (const Child* p : n->parents_) {
      auto [pp, ps] = edge(p);
      perm |= pp;
      shared &= ps;
    }
    return {perm, shared};
  }

  Result<void> visit(Node* node, int depth) {
    if (depth > 256) return Error{ELOOP, "block graph too deep"};
    visited_.insert(node);
    auto [perm, shared] = cumulative(node);
    for (const auto& c : node->children_) {
      uint64_t np = 0, ns = kPermAll;
      node->driver().child_perm(*c, perm, shared, &np, &ns);
      if (c->node_->flags().force_share) ns = kPermAll;
      auto old = edge(c.get());
      edges_[c.get()] = {np, ns};
      if (old != std::make_pair(np, ns) || !visited_.count(c->node_)) {
        STRATA_TRY(visit(c->node_, depth + 1));
      }
    }
    return {};
  }

  static std::string user_of(const Child* c) { return c->user(); }

  Result<void> check(Node* node) {
    const auto& parents = node->parents_;
    for (const Child* a : parents) {
      for (const Child* b : parents) {
        if (a == b) continue;
        uint64_t conflict = edge(b).first & ~edge(a).second;
        if (!conflict) continue;
        return Error{EPERM, "Permission conflict on node '" + node->name() + "': permissions '" +
                                perm_names(conflict) + "' are both required by " + user_of(b) +
                                " (uses node '" + node->name() + "' as '" + b->name() +
                                "' child) and unshared by " + user_of(a) + " (uses node '" +
                                node->name() + "' as '" + a->name() + "' child)."};
      }
    }
    auto [perm, shared] = cumulative(node);
    if ((perm & (kPermWrite | kPermWriteUnchanged)) && node->read_only()) {
      return Error{EPERM, "Block node is read-only"};
    }
    return node->driver().check_perm(perm, shared);
  }

  void commit() {
    for (auto& [c, ps] : edges_) {
      auto* child = const_cast<Child*>(c);
      child->perm_ = ps.first;
      child->shared_ = ps.second;
    }
    for (Node* n : visited_) {
      auto [perm, shared] = cumulative(n);
      n->driver().set_perm(perm, shared);
    }
  }

  std::map<const Child*, std::pair<uint64_t, uint64_t>> edges_;
  std::set<Node*> visited_;
};

Result<void> Graph::refresh_perms(const std::vector<Node*>& changed) {
  return PermissionUpdate().run(changed);
}

Task<Result<void>> Graph::co_replace_node(Node& from, Node& to) {
  if (&from == &to) co_return Result<void>{};
  GraphChange change(*this);
  std::vector<Node*> drained = {&from, &to};
  co_await change.co_drain(std::move(drained));
  auto r = change.replace(from, to);
  if (r) r = change.commit();
  co_await change.co_finish();
  co_return r;
}

}  // namespace strata
