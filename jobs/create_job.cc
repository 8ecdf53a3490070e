#include "jobs/create_job.h"

#include <sys/stat.h>

#include <cstring>

#include "block/core/graph.h"
#include "block/drivers/file_create.h"
#include "block/drivers/qcow2/create.h"
#include "strata/engine.h"

namespace strata {

namespace {

using nlohmann::json;

// As QEMU's file driver: locks first (block/drivers/file_create.h), so a
// file another process uses is refused untouched.
Task<Result<void>> co_create_file(Loop& loop, json o) {
  std::string filename = o["filename"].get<std::string>();
  uint64_t size = o["size"].get<uint64_t>();
  std::string mode = o.value("preallocation", "off");
  Preallocation prealloc = Preallocation::kOff;
  if (!parse_preallocation(mode, &prealloc) || prealloc == Preallocation::kMetadata) {
    co_return Error{ENOTSUP, "Unsupported preallocation mode '" + mode + "'"};
  }
  co_return co_await strata::co_create_file(loop, filename, size, prealloc);
}

// The `file` node named by reference, below raw (without a window) and
// filters, which write to it unchanged.
Result<Node*> file_node(Graph& graph, const std::string& name) {
  Node* node = graph.find(name);
  if (!node) return Error{ENOENT, "Cannot find device='" + name + "' nor node-name='" + name + "'"};
  for (Node* n = node; n;
       n = n->driver().filtered_child() ? n->driver().filtered_child()->node() : nullptr) {
    if (n->driver_name() == "file") return n;
  }
  return Error{ENOTSUP, "Creating qcow2 images is supported on 'file' nodes only"};
}

// Where the image goes: the node to hold while writing (null for an
// inline file) and the path.
struct Target {
  Node* node = nullptr;
  std::string path;
};

Result<Target> target_of(Graph& graph, const json& file) {
  if (file.is_string()) {
    STRATA_TRY_ASSIGN(Node * node, file_node(graph, file.get<std::string>()));
    return Target{node, node->driver().filename()};
  }
  if (file.value("driver", "") != "file" || !file.contains("filename")) {
    return Error{ENOTSUP, "Creating qcow2 images is supported on 'file' nodes only"};
  }
  // As QEMU, which opens the node: the file must exist.
  std::string path = file["filename"].get<std::string>();
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) {
    return Error{errno, "Could not open '" + path + "': " + std::strerror(errno)};
  }
  if (S_ISDIR(st.st_mode)) return Error{EISDIR, "'" + path + "' is a directory"};
  return Target{nullptr, path};
}

// The image was written behind the node's back: let the node see the size
// of the file now (a truncate to the same size).
Task<Result<void>> co_refresh_size(Child& user, const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) co_return Error{errno, std::strerror(errno)};
  co_return co_await user.co_truncate(static_cast<uint64_t>(st.st_size), false,
                                      Preallocation::kOff);
}

Result<qcow2::CreateOptions> qcow2_options(const json& o) {
  if (o.contains("data-file")) return Error{ENOTSUP, "External data files are not supported"};
  qcow2::CreateOptions options;
  options.size = o["size"].get<uint64_t>();
  if (options.size > static_cast<uint64_t>(INT64_MAX)) {
    return Error{EINVAL, "Image size cannot be negative"};
  }
  options.cluster_size = o.value("cluster-size", uint64_t{65536});
  options.version = o.value("version", "v3") == "v2" ? 2u : 3u;
  options.lazy_refcounts = o.value("lazy-refcounts", false);
  options.refcount_bits = static_cast<uint32_t>(o.value("refcount-bits", 16));
  if (!parse_preallocation(o.value("preallocation", "off"), &options.preallocation)) {
    return Error{EINVAL, "Invalid preallocation mode"};
  }
  options.backing_file = o.value("backing-file", "");
  options.backing_format = o.value("backing-fmt", "");
  STRATA_TRY(qcow2::validate_create_options(options));
  return options;
}

Task<Result<void>> co_create_qcow2(Engine& engine, json o) {
  Graph& graph = engine.graph();
  STRATA_CO_TRY_ASSIGN(Target target, target_of(graph, o["file"]));
  STRATA_CO_TRY_ASSIGN(qcow2::CreateOptions options, qcow2_options(o));
  Child* user = nullptr;
  options.lock_file = target.node == nullptr;
  if (target.node) {
    auto root =
        graph.attach_root(*target.node, "blockdev-create", kPermWrite | kPermResize, kPermAll);
    if (!root) co_return std::move(root).error();
    user = *root;
  }
  auto r = co_await qcow2::co_create_image(engine, target.path, std::move(options));
  if (user) {
    if (r) r = co_await co_refresh_size(*user, target.path);
    co_await graph.co_detach(user);
  }
  co_return r;
}

}  // namespace

CreateJob::CreateJob(Engine& engine, std::string id, nlohmann::json options)
    : Job(engine, JobOptions{.id = std::move(id), .auto_dismiss = false}),
      options_(std::move(options)) {}

Task<Result<void>> CreateJob::co_run() {
  progress_set_remaining(1);
  std::string driver = options_["driver"].get<std::string>();
  Result<void> r;
  if (driver == "file") {
    r = co_await co_create_file(engine().loop(), options_);
  } else if (driver == "qcow2") {
    r = co_await co_create_qcow2(engine(), options_);
  } else {
    r = Error{ENOTSUP, "Driver does not support blockdev-create"};
  }
  progress_update(1);
  co_return r;
}

}  // namespace strata
