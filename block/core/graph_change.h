// GraphChange: several structural changes to the block graph made as one:
// under one drain, with one permission update, undone together (QEMU's
// Transaction around bdrv_replace_node, bdrv_attach_child,
// bdrv_set_backing_hd and friends). Filter insertion above a node, a pivot,
// an external snapshot, dropping committed layers and reopen are each one
// GraphChange.
//
// Contract: drain first (co_drain: the nodes whose edges change, with
// everything above them), then the edge operations. Each operation is
// applied to the structure at once and checked for frozen edges and cycles,
// but permissions stay as they were until co_commit(), which re-derives
// them for every touched node: on a conflict (or an image lock another
// process holds) it undoes every operation, in reverse order, and returns
// the error; the graph is then exactly as before. A failed operation
// changes nothing itself; the caller usually aborts the whole change. After
// a successful commit, abort() may still undo everything (a QMP transaction
// whose later action failed). co_finish() ends the drain, destroys the
// detached edges and closes implicit nodes nobody uses any more (on
// success), and must run once; a change neither committed nor aborted by
// then is aborted. Edges marked to stay at their node (Child::
// stays_at_node) are never moved by replace().
// Thread rules: loop-thread only; nothing else may change the graph
// between the first operation and co_finish().
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "block/core/graph.h"

namespace strata {

class GraphChange {
 public:
  explicit GraphChange(Graph& graph) : graph_(graph) {}
  ~GraphChange();
  GraphChange(const GraphChange&) = delete;
  GraphChange& operator=(const GraphChange&) = delete;

  // Drains `nodes` (and what DrainScope adds) until co_finish(); may be
  // called more than once, before the operations.
  Task<void> co_drain(std::vector<Node*> nodes, DrainScope scope = DrainScope::kParents);

  // A new edge from `parent` to `child`.
  Result<Child*> attach(Node& parent, Node& child, const std::string& name, uint32_t role);
  // Points `edge` at `to`.
  Result<void> retarget(Child& edge, Node& to);
  // Removes `edge`; it is destroyed by co_finish() (kept until then so that
  // an abort can put it back).
  Result<void> detach(Child& edge);
  // Moves every parent edge of `from` to `to`, except edges that stay at
  // their node and edges from `to` or from below it (an overlay keeps its
  // backing, a filter its filtered child). `from` stays open even if
  // nobody uses it any more: its owner decides (retarget and detach
  // release the node they leave if nobody uses it).
  Result<void> replace(Node& from, Node& to);
  // New common flags for `node` (read-only, ...), applied now; permissions
  // follow at commit.
  void set_flags(Node& node, const NodeFlags& flags);

  // Re-derives permissions for everything touched; undoes all on failure.
  Result<void> commit();
  // Undoes every operation (before or after commit).
  void abort();
  Task<void> co_finish();

  bool committed() const { return committed_; }

 private:
  void touch(Node* node);
  void undo_all();

  Graph& graph_;
  std::vector<std::unique_ptr<DrainSection>> drains_;
  std::vector<std::function<void()>> undo_;  // newest last
  std::vector<Node*> touched_;
  std::vector<std::unique_ptr<Child>> detached_;
  std::vector<Node*> released_;  // nodes that may have lost their last user
  bool committed_ = false;
  bool finished_ = false;
};

}  // namespace strata
