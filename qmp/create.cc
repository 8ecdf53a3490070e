// blockdev-create. Until block jobs exist the image is created synchronously
// before the command returns (no job, no JOB_STATUS_CHANGE events, nothing
// to dismiss); docs/qmp.md lists this difference.
//
// A qcow2 image is written to the file behind its `file` node: an existing
// `file` node (directly or below raw/filters) named by reference, or an
// existing file given inline. While it is written, the command holds write
// and resize permissions on that node, so a node in use by a format (whose
// image would be destroyed under it) is refused as in QEMU.
#include <fcntl.h>
#include <sys/stat.h>

#include <cstring>

#include <vector>

#include "base/fs.h"
#include "block/core/graph.h"
#include "block/drivers/file_create.h"
#include "block/drivers/qcow2/create.h"
#include "qmp/commands.h"
#include "qmp/context.h"

namespace strata::qmp {

namespace {

Result<void> check_job_id(const std::string& id) {
  bool ok = !id.empty() && std::isalpha(static_cast<unsigned char>(id[0]));
  for (char c : id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_')
      ok = false;
  }
  if (!ok) return Error{EINVAL, "Invalid job ID '" + id + "'"};
  return {};
}

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

Result<uint32_t> qcow2_version(const json& o) {
  std::string v = o.value("version", "v3");
  return v == "v2" ? 2u : 3u;
}

// The image was written behind the node's back: let the node see the size
// of the file now (a truncate to the same size).
Task<Result<void>> co_refresh_size(Child& user, const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) co_return Error{errno, std::strerror(errno)};
  co_return co_await user.co_truncate(static_cast<uint64_t>(st.st_size), false,
                                      Preallocation::kOff);
}

Task<Result<void>> co_create_qcow2(QmpContext& ctx, json o) {
  Graph& graph = ctx.engine().graph();
  STRATA_CO_TRY_ASSIGN(Target target, target_of(graph, o["file"]));
  if (o.contains("data-file")) co_return Error{ENOTSUP, "External data files are not supported"};
  qcow2::CreateOptions options;
  options.size = o["size"].get<uint64_t>();
  if (options.size > static_cast<uint64_t>(INT64_MAX)) {
    co_return Error{EINVAL, "Image size cannot be negative"};
  }
  options.cluster_size = o.value("cluster-size", uint64_t{65536});
  STRATA_CO_TRY_ASSIGN(options.version, qcow2_version(o));
  options.lazy_refcounts = o.value("lazy-refcounts", false);
  options.refcount_bits = static_cast<uint32_t>(o.value("refcount-bits", 16));
  if (!parse_preallocation(o.value("preallocation", "off"), &options.preallocation)) {
    co_return Error{EINVAL, "Invalid preallocation mode"};
  }
  options.backing_file = o.value("backing-file", "");
  options.backing_format = o.value("backing-fmt", "");
  STRATA_CO_TRY(qcow2::validate_create_options(options));
  Child* user = nullptr;
  options.lock_file = target.node == nullptr;
  if (target.node) {
    auto root =
        graph.attach_root(*target.node, "blockdev-create", kPermWrite | kPermResize, kPermAll);
    if (!root) co_return std::move(root).error();
    user = *root;
  }
  auto r = co_await qcow2::co_create_image(ctx.engine(), target.path, std::move(options));
  if (user) {
    if (r) r = co_await co_refresh_size(*user, target.path);
    co_await graph.co_detach(user);
  }
  co_return r;
}

Task<Result<json>> co_blockdev_create(QmpContext& ctx, json args) {
  STRATA_CO_TRY(check_job_id(args["job-id"].get<std::string>()));
  json& o = args["options"];
  std::string driver = o["driver"].get<std::string>();
  if (driver == "file") {
    STRATA_CO_TRY(co_await co_create_file(ctx.engine().loop(), std::move(o)));
    co_return json::object();
  }
  if (driver == "qcow2") {
    STRATA_CO_TRY(co_await co_create_qcow2(ctx, std::move(o)));
    co_return json::object();
  }
  co_return Error{ENOTSUP, "Driver '" + driver + "' does not support blockdev-create"};
}

}  // namespace

void register_create_command(QmpContext& ctx) {
  ctx.registry().add({.name = "blockdev-create",
                      .args = {{"job-id", "str"}, {"options", "BlockdevCreateOptions"}},
                      .handler = co_blockdev_create});
}

}  // namespace strata::qmp
