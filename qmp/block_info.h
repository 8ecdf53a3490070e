// The information records of the block query commands, in QEMU's shapes:
// BlockDeviceInfo (query-named-block-nodes), ImageInfo and BlockStats.
//
// Contract: pure functions of the graph's current state plus `sizes`, the
// allocated bytes of each file name (gathered off the loop thread by the
// caller, since stat() may block). Other areas extend a node's record with
// a BlockInfoExtender (the bitmap code adds "dirty-bitmaps").
// Thread rules: loop-thread only.
#pragma once

#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace strata {
class Node;
class Graph;
}  // namespace strata

namespace strata::qmp {

class QmpContext;

using AllocatedSizes = std::map<std::string, int64_t>;
using BlockInfoExtender = std::function<void(const Node& node, nlohmann::json& info)>;

// A QmpContext service: functions that add fields to each BlockDeviceInfo.
// Register with ctx.service<BlockInfoExtensions>().extenders.push_back(fn)
// from a register_*_commands(QmpContext&) function.
struct BlockInfoExtensions {
  explicit BlockInfoExtensions(QmpContext&) {}
  std::vector<BlockInfoExtender> extenders;
};

// File names whose allocated size the records below report.
std::vector<std::string> files_of(const Graph& graph);
// stat() each file (blocking; run it on the thread pool).
AllocatedSizes allocated_sizes(const std::vector<std::string>& files);

nlohmann::json image_info(const Node& node, const AllocatedSizes& sizes, bool with_backing);
nlohmann::json block_device_info(const Node& node, const AllocatedSizes& sizes, bool flat,
                                 const std::vector<BlockInfoExtender>& extenders);
nlohmann::json block_stats(const Node& node, bool with_backing);
// Length of the backing chain below `node` (QEMU's backing_file_depth).
int backing_depth(const Node& node);

}  // namespace strata::qmp
