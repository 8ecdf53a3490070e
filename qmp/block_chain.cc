#include "qmp/block_chain.h"

#include <climits>
#include <cstdlib>

#include "block/core/block_status.h"
#include "qmp/block_lookup.h"
#include "qmp/errors.h"

namespace strata::qmp {

Node* skip_filters(Node* node) {
  while (node && node->filtered() && !node->backing()) node = node->filtered()->node();
  return node;
}

bool chain_contains(Node& top, const Node& node) {
  for (Node* n = &top; n;) {
    if (n == &node) return true;
    Child* c = Graph::chain_child(*n);
    n = c ? c->node() : nullptr;
  }
  return false;
}

Node* find_overlay(Node& active, const Node& base) {
  Node* n = skip_filters(&active);
  while (n) {
    Node* below = next_layer(*n);
    if (below == &base || skip_filters(below) == &base) return n;
    n = below ? skip_filters(below) : nullptr;
  }
  return nullptr;
}

Node* find_base(Node& node) {
  Node* n = skip_filters(&node);
  Node* last = nullptr;
  while (n) {
    Node* below = next_layer(*n);
    if (!below) break;
    last = skip_filters(below);
    n = last;
  }
  return last;
}

namespace {
std::string real(const std::string& path) {
  char buf[PATH_MAX];
  return realpath(path.c_str(), buf) ? std::string(buf) : std::string();
}

std::string directory_of(const std::string& file) {
  size_t slash = file.rfind('/');
  return slash == std::string::npos ? "." : file.substr(0, slash);
}

bool same_file(const std::string& name, const Node& above, const Node& layer) {
  const std::string layer_file = layer.driver().filename();
  if (name == layer_file) return true;
  if (name.find("://") != std::string::npos) return false;
  std::string full = name[0] == '/' ? name : directory_of(above.driver().filename()) + "/" + name;
  std::string a = real(full);
  return !a.empty() && a == real(layer_file);
}
}  // namespace

Node* find_backing_image(Node& node, const std::string& filename) {
  if (filename.empty()) return nullptr;
  for (Node* n = skip_filters(&node); n;) {
    Node* below = next_layer(*n);
    if (!below) break;
    below = skip_filters(below);
    if (same_file(filename, *n, *below)) return below;
    n = below;
  }
  return nullptr;
}

Result<Node*> get_root_bs(const Graph& graph, const std::string& name) {
  Node* node = graph.find(name);
  if (!node) {
    return Error{ENODEV, "Cannot find device='" + name + "' nor node-name='" + name + "'"};
  }
  for (const Child* p : node->parents()) {
    if (!p->is_root()) return Error{EINVAL, "Need a root block node"};
  }
  return node;
}

Result<Node*> get_job_device(const Graph& graph, const std::string& device) {
  if (!graph.find(device)) {
    return class_error(ErrorClass::kDeviceNotFound, "Device '" + device + "' not found");
  }
  return get_root_bs(graph, device);
}

}  // namespace strata::qmp
