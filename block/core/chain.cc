// Backing chains: the edge a chain walk follows, and freezing.
#include "block/core/graph.h"

namespace strata {

Child* Graph::chain_child(const Node& node) {
  if (Child* b = node.backing()) return b;
  return node.filtered();
}

namespace {
std::string link_error(const Node& parent, const Child& edge) {
  return "Cannot change '" + edge.name() + "' link from '" + parent.name() + "' to '" +
         edge.node()->name() + "'";
}
}  // namespace

Result<void> Graph::check_chain_not_frozen(Node& top, Node* base) const {
  for (Node* n = &top; n && n != base;) {
    Child* c = chain_child(*n);
    if (!c) break;
    if (c->frozen()) return Error{EPERM, link_error(*n, *c)};
    n = c->node();
  }
  return {};
}

Result<void> Graph::freeze_chain(Node& top, Node* base) {
  if (base && &top != base && !reaches(top, *base)) {
    return Error{EINVAL,
                 "Node '" + base->name() + "' is not a backing image of '" + top.name() + "'"};
  }
  STRATA_TRY(check_chain_not_frozen(top, base));
  for (Node* n = &top; n && n != base;) {
    Child* c = chain_child(*n);
    if (!c) break;
    c->frozen_ = true;
    n = c->node();
  }
  return {};
}

void Graph::unfreeze_chain(Node& top, Node* base) {
  for (Node* n = &top; n && n != base;) {
    Child* c = chain_child(*n);
    if (!c) break;
    c->frozen_ = false;
    n = c->node();
  }
}

}  // namespace strata
