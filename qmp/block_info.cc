// BlockDeviceInfo, ImageInfo and BlockStats records.
#include "qmp/block_info.h"

#include <sys/stat.h>

#include "block/core/graph.h"

namespace strata::qmp {

using nlohmann::json;

namespace {

const char* detect_zeroes_name(DetectZeroes d) {
  switch (d) {
    case DetectZeroes::kOff:
      return "off";
    case DetectZeroes::kOn:
      return "on";
    case DetectZeroes::kUnmap:
      return "unmap";
  }
  return "off";
}

// The node whose data a backing edge leads to (skips filters on the way).
const Node* backing_node(const Node& node) {
  Child* b = node.backing();
  return b ? b->node() : nullptr;
}

json stats_json(const BlockStats& st) {
  json j = {{"rd_bytes", st.rd_bytes},
            {"wr_bytes", st.wr_bytes},
            {"zone_append_bytes", st.zone_append_bytes},
            {"unmap_bytes", st.unmap_bytes},
            {"rd_operations", st.rd_operations},
            {"wr_operations", st.wr_operations},
            {"zone_append_operations", 0},
            {"flush_operations", st.flush_operations},
            {"unmap_operations", st.unmap_operations},
            {"rd_total_time_ns", st.rd_total_time_ns},
            {"wr_total_time_ns", st.wr_total_time_ns},
            {"zone_append_total_time_ns", 0},
            {"flush_total_time_ns", st.flush_total_time_ns},
            {"unmap_total_time_ns", st.unmap_total_time_ns},
            {"wr_highest_offset", st.wr_highest_offset},
            {"rd_merged", st.rd_merged},
            {"wr_merged", st.wr_merged},
            {"zone_append_merged", 0},
            {"unmap_merged", st.unmap_merged},
            {"failed_rd_operations", st.failed_rd_operations},
            {"failed_wr_operations", st.failed_wr_operations},
            {"failed_zone_append_operations", 0},
            {"failed_flush_operations", st.failed_flush_operations},
            {"failed_unmap_operations", st.failed_unmap_operations},
            {"invalid_rd_operations", st.invalid_rd_operations},
            {"invalid_wr_operations", st.invalid_wr_operations},
            {"invalid_zone_append_operations", 0},
            {"invalid_flush_operations", st.invalid_flush_operations},
            {"invalid_unmap_operations", st.invalid_unmap_operations},
            {"account_invalid", false},
            {"account_failed", false},
            {"timed_stats", json::array()}};
  return j;
}

}  // namespace

std::vector<std::string> files_of(const Graph& graph) {
  std::vector<std::string> out;
  for (const Node* n : graph.nodes()) {
    std::string f = n->driver().filename();
    if (!f.empty()) out.push_back(f);
  }
  return out;
}

AllocatedSizes allocated_sizes(const std::vector<std::string>& files) {
  AllocatedSizes sizes;
  for (const auto& f : files) {
    struct stat st {};
    if (::stat(f.c_str(), &st) == 0) sizes[f] = static_cast<int64_t>(st.st_blocks) * 512;
  }
  return sizes;
}

int backing_depth(const Node& node) {
  int depth = 0;
  for (const Node* b = backing_node(node); b; b = backing_node(*b)) depth++;
  return depth;
}

json image_info(const Node& node, const AllocatedSizes& sizes, bool with_backing) {
  std::string filename = node.driver().filename();
  json info = {{"filename", filename},
               {"format", node.driver_name()},
               {"virtual-size", node.size()},
               {"dirty-flag", false}};
  if (auto it = sizes.find(filename); it != sizes.end()) info["actual-size"] = it->second;
  json specific = node.driver().format_specific();
  if (!specific.is_null()) {
    if (specific.contains("type") && specific.contains("data")) {
      info["format-specific"] = specific;
    } else {
      info["format-specific"] = {{"type", node.driver_name()}, {"data", specific}};
    }
    if (auto cs = specific.find("cluster-size"); cs != specific.end()) info["cluster-size"] = *cs;
  }
  if (const Node* b = backing_node(node)) {
    info["backing-filename"] = b->driver().filename();
    info["full-backing-filename"] = b->driver().filename();
    info["backing-filename-format"] = b->driver_name();
    if (with_backing) info["backing-image"] = image_info(*b, sizes, true);
  }
  return info;
}

json block_device_info(const Node& node, const AllocatedSizes& sizes, bool flat,
                       const std::vector<BlockInfoExtender>& extenders) {
  const NodeFlags& f = node.flags();
  json children = json::array();
  for (const auto& c : node.children()) {
    children.push_back({{"child", c->name()}, {"node-name", c->node()->name()}});
  }
  json info = {
      {"file", node.driver().filename()},
      {"node-name", node.name()},
      {"ro", f.read_only},
      {"drv", node.driver_name()},
      // QEMU counts the chain while walking backing images: flat answers say 0.
      {"backing_file_depth", flat ? 0 : backing_depth(node)},
      {"children", std::move(children)},
      {"active", true},
      {"encrypted", false},
      {"detect_zeroes", detect_zeroes_name(f.detect_zeroes)},
      {"bps", 0},
      {"bps_rd", 0},
      {"bps_wr", 0},
      {"iops", 0},
      {"iops_rd", 0},
      {"iops_wr", 0},
      {"image", image_info(node, sizes, !flat)},
      {"cache", {{"writeback", true}, {"direct", f.cache_direct}, {"no-flush", f.cache_no_flush}}},
      // An int in QEMU's schema: a threshold of 2^63 or more reads negative there too.
      {"write_threshold", static_cast<int64_t>(node.write_threshold())}};
  if (const Node* b = backing_node(node)) info["backing_file"] = b->driver().filename();
  json extension = node.driver().block_info_extension();
  if (extension.is_object()) info.update(extension);
  for (const auto& extend : extenders) extend(node, info);
  return info;
}

json block_stats(const Node& node, bool with_backing) {
  json out = {{"node-name", node.name()}, {"stats", stats_json(node.stats())}};
  if (node.driver_name() == "file") {
    out["driver-specific"] = {{"driver", "file"},
                              {"discard-nb-ok", node.stats().unmap_operations},
                              {"discard-nb-failed", node.stats().failed_unmap_operations},
                              {"discard-bytes-ok", node.stats().unmap_bytes}};
  }
  if (Child* file = node.file()) out["parent"] = block_stats(*file->node(), with_backing);
  if (with_backing) {
    if (const Node* b = backing_node(node)) out["backing"] = block_stats(*b, with_backing);
  }
  return out;
}

}  // namespace strata::qmp
