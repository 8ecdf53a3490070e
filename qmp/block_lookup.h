// Node lookup with QEMU's messages. Strata has no BlockBackends (named
// devices), so a `device` argument never matches by itself, exactly as in
// qemu-storage-daemon; a node is found by its node-name.
// Thread rules: loop-thread only.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "block/core/graph.h"

namespace strata::qmp {

// QEMU's bdrv_lookup_bs(device, node_name).
inline Result<Node*> lookup_bs(const Graph& graph, const std::string& device,
                               const std::string& node_name) {
  if (!node_name.empty()) {
    if (Node* n = graph.find(node_name)) return n;
  }
  return Error{ENODEV, "Cannot find device='" + device + "' nor node-name='" + node_name + "'"};
}

// For commands taking optional `device` and `node-name` arguments.
inline Result<Node*> lookup_device_or_node(const Graph& graph, const nlohmann::json& args) {
  return lookup_bs(graph, args.value("device", ""), args.value("node-name", ""));
}

// QEMU's op blocker on a node that is some node's backing file: "Node 'x'
// is busy: node is used as backing hd of 'y'".
inline Result<void> check_not_backing(const Node& node) {
  for (const Child* p : node.parents()) {
    if (!p->is_root() && (p->role() & kRoleCow)) {
      return Error{EBUSY, "Node '" + node.name() + "' is busy: node is used as backing hd of '" +
                              p->parent()->name() + "'"};
    }
  }
  return {};
}

}  // namespace strata::qmp
