// blockdev-create. Until block jobs exist the image is created synchronously
// before the command returns (no job, no JOB_STATUS_CHANGE events, nothing
// to dismiss); docs/qmp.md lists this difference.
#include <fcntl.h>

#include <vector>

#include "base/fs.h"
#include "block/core/graph.h"
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

Task<Result<void>> co_fill_zeroes(Loop& loop, int fd, uint64_t size) {
  std::vector<uint8_t> zeroes(1 << 20, 0);
  for (uint64_t off = 0; off < size;) {
    uint64_t n = std::min<uint64_t>(zeroes.size(), size - off);
    IoVec iov(zeroes.data(), n);
    auto r = co_await fs::co_pwritev(loop, fd, iov, off);
    if (!r) co_return std::move(r).error();
    off += n;
  }
  co_return Result<void>{};
}

Task<Result<void>> co_size_file(Loop& loop, int fd, uint64_t size, std::string prealloc) {
  STRATA_CO_TRY(co_await fs::co_ftruncate(loop, fd, 0));
  if (prealloc == "full") STRATA_CO_TRY(co_await co_fill_zeroes(loop, fd, size));
  if (prealloc == "falloc" && size) STRATA_CO_TRY(co_await fs::co_allocate(loop, fd, 0, size));
  co_return co_await fs::co_ftruncate(loop, fd, size);
}

Task<Result<void>> co_create_file(Loop& loop, json o) {
  std::string filename = o["filename"].get<std::string>();
  uint64_t size = o["size"].get<uint64_t>();
  std::string prealloc = o.value("preallocation", "off");
  if (prealloc == "metadata") {
    co_return Error{ENOTSUP, "Unsupported preallocation mode 'metadata'"};
  }
  auto fd = co_await fs::co_open(loop, filename, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (!fd) {
    co_return Error{fd.error().code, "Could not create '" + filename + "': " + fd.error().message};
  }
  auto r = co_await co_size_file(loop, *fd, size, prealloc);
  (void)co_await fs::co_close(loop, *fd);
  co_return r;
}

// The file of a protocol node given as `file` (a node name or options).
Result<std::string> target_file(Graph& graph, const json& file) {
  if (file.is_string()) {
    Node* node = graph.find(file.get<std::string>());
    if (!node) {
      return Error{ENOENT, "Cannot find device='' nor node-name='" + file.get<std::string>() + "'"};
    }
    return node->driver().filename();
  }
  if (file.value("driver", "") == "file" && file.contains("filename")) {
    return file["filename"].get<std::string>();
  }
  return Error{ENOTSUP, "Creating qcow2 images is supported on 'file' nodes only"};
}

Result<uint32_t> qcow2_version(const json& o) {
  std::string v = o.value("version", "v3");
  return v == "v2" ? 2u : 3u;
}

Task<Result<void>> co_create_qcow2(QmpContext& ctx, json o) {
  STRATA_CO_TRY_ASSIGN(std::string path, target_file(ctx.engine().graph(), o["file"]));
  if (o.contains("data-file")) co_return Error{ENOTSUP, "External data files are not supported"};
  qcow2::CreateOptions options;
  options.size = o["size"].get<uint64_t>();
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
  co_return co_await qcow2::co_create_image(ctx.engine(), std::move(path), std::move(options));
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
