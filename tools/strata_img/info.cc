// strata-img info [-f FMT] [--output=human|json] [--backing-chain] [-U] [--image-opts] FILE
#include <sys/stat.h>

#include <algorithm>

#include <cstdio>
#include <ctime>

#include "block/core/filename.h"
#include "block/drivers/vmdk/vmdk.h"
#include "strata_img/common.h"
#include "strata_img/info.h"
#include "strata_img/json_out.h"

namespace strata::img {

namespace {

using ojson = nlohmann::ordered_json;

uint64_t allocated_bytes(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return 0;
  return uint64_t(st.st_blocks) * 512;
}

std::string join_backing(const std::string& image, const std::string& backing) {
  auto full = backing_filename(image, backing);
  return full ? *full : backing;
}

ojson snapshot_json(const SnapshotEntry& s) {
  ojson j;
  if (s.has_icount) j["icount"] = s.icount;
  j["vm-clock-nsec"] = s.vm_clock_nsec % 1000000000ull;
  j["name"] = s.name;
  j["date-sec"] = s.date_sec;
  j["date-nsec"] = s.date_nsec;
  j["vm-clock-sec"] = s.vm_clock_nsec / 1000000000ull;
  j["id"] = s.id;
  j["vm-state-size"] = s.vm_state_size;
  return j;
}

// `in`'s members in the order `order` gives, then the others.
ojson ordered(const nlohmann::json& in, std::initializer_list<const char*> order) {
  ojson out;
  for (const char* k : order) {
    if (in.contains(k)) out[k] = ojson::parse(in[k].dump());
  }
  for (auto it = in.begin(); it != in.end(); ++it) {
    if (!out.contains(it.key())) out[it.key()] = ojson::parse(it->dump());
  }
  return out;
}

// Each element of the array `key` of `data` reordered.
void order_elements(ojson& data, const char* key, std::initializer_list<const char*> order) {
  if (!data.contains(key)) return;
  for (auto& e : data[key]) e = ordered(nlohmann::json::parse(e.dump()), order);
}

// QEMU's field order for the format-specific data (qcow2, vmdk).
ojson ordered_format_specific(const nlohmann::json& spec) {
  const auto& in = spec["data"];
  ojson data;
  if (spec["type"] == "vmdk") {
    data = ordered(in, {"cid", "parent-cid", "create-type", "extents"});
    order_elements(data, "extents",
                   {"compressed", "virtual-size", "filename", "cluster-size", "format"});
  } else {
    data = ordered(in, {"compat", "compression-type", "lazy-refcounts", "bitmaps", "refcount-bits",
                        "data-file", "data-file-raw", "corrupt", "extended-l2"});
    // Each bitmap as QEMU lists it: flags, name, granularity.
    order_elements(data, "bitmaps", {"flags", "name", "granularity"});
  }
  ojson out;
  out["type"] = spec["type"];
  out["data"] = data;
  return out;
}

// QEMU's allocated file size of a node: a file's blocks; for a filter (raw
// without a window) its child's; for a format, its files holding data or
// metadata (a vmdk's extents too), not its backing file.
uint64_t allocated_bytes(Node* node) {
  if (node->children().empty()) return allocated_bytes(node_filename(node));
  if (Child* filtered = node->filtered()) return allocated_bytes(filtered->node());
  uint64_t sum = 0;
  for (const auto& c : node->children()) {
    if (c->role() & (kRoleData | kRoleMetadata)) sum += allocated_bytes(c->node());
  }
  return sum;
}

// The parent image a format names in its header, and its format.
std::pair<std::string, std::string> backing_names(Node* node) {
  if (ImageOps* ops = node->driver().image_ops()) {
    return {ops->backing_file_name(), ops->backing_format_name()};
  }
  if (auto* v = dynamic_cast<vmdk::VmdkDriver*>(&node->driver())) {
    return {v->backing_file(), v->backing_file().empty() ? "" : "vmdk"};
  }
  return {};
}

}  // namespace

std::vector<SnapshotEntry> snapshots_of(Node* node) {
  ImageOps* ops = node->driver().image_ops();
  return ops ? ops->list_snapshots() : std::vector<SnapshotEntry>{};
}

ojson image_info_json(Node* node) {
  ojson j;
  ImageOps* ops = node->driver().image_ops();
  std::string filename = node_filename(node);
  std::vector<SnapshotEntry> snapshots = snapshots_of(node);
  if (!snapshots.empty()) {
    ojson list = ojson::array();
    for (const auto& s : snapshots) list.push_back(snapshot_json(s));
    j["snapshots"] = list;
  }
  auto [backing, backing_format] = backing_names(node);
  if (!backing_format.empty()) j["backing-filename-format"] = backing_format;
  j["virtual-size"] = node->size();
  j["filename"] = filename;
  if (uint64_t cs = node->driver().cluster_size()) j["cluster-size"] = cs;
  j["format"] = node_format(node);
  j["actual-size"] = allocated_bytes(node);
  nlohmann::json spec = node->driver().format_specific();
  if (!spec.is_null()) j["format-specific"] = ordered_format_specific(spec);
  if (!backing.empty()) {
    j["full-backing-filename"] = join_backing(filename, backing);
    j["backing-filename"] = backing;
  }
  // QEMU reports no dirty flag when it has no driver info (mixed vmdk extents).
  auto* v = dynamic_cast<vmdk::VmdkDriver*>(&node->driver());
  if (!v || v->extents_alike()) {
    j["dirty-flag"] = ops && ops->dirty_flag();
  }
  return j;
}

std::string snapshot_table_text(const std::vector<SnapshotEntry>& snaps) {
  std::string out;
  char line[512];
  std::snprintf(line, sizeof line, "%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE",
                "VM CLOCK", "ICOUNT");
  out += line;
  for (const auto& s : snaps) {
    char date[64], clock[64], icount[32] = "";
    time_t t = s.date_sec;
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S", &tm);
    uint64_t secs = s.vm_clock_nsec / 1000000000ull;
    std::snprintf(clock, sizeof clock, "%02llu:%02llu:%02llu.%03llu",
                  (unsigned long long)(secs / 3600), (unsigned long long)(secs / 60 % 60),
                  (unsigned long long)(secs % 60),
                  (unsigned long long)(s.vm_clock_nsec / 1000000 % 1000));
    if (s.has_icount) std::snprintf(icount, sizeof icount, "%lld", (long long)s.icount);
    std::snprintf(line, sizeof line, "%-9s %-16s %8s%20s%13s%11s\n", s.id.c_str(), s.name.c_str(),
                  size_to_str(s.vm_state_size).c_str(), date, clock, icount);
    out += line;
  }
  return out;
}

namespace {

// printf into a string.
template <typename... T>
void appendf(std::string& out, const char* fmt, T... args) {
  char buf[1024];
  int n = std::snprintf(buf, sizeof buf, fmt, args...);
  if (n < 0) return;
  if (size_t(n) < sizeof buf) {
    out.append(buf, size_t(n));
    return;
  }
  std::string big(size_t(n) + 1, '\0');
  std::snprintf(big.data(), big.size(), fmt, args...);
  out.append(big.data(), size_t(n));
}

void format_specific_text(std::string& out, const ojson& data, int indent) {
  for (auto it = data.begin(); it != data.end(); ++it) {
    std::string key = it.key();
    for (char& c : key) {
      if (c == '-') c = ' ';
    }
    std::string pad(indent, ' ');
    if (it->is_object()) {
      appendf(out, "%s%s:\n", pad.c_str(), key.c_str());
      format_specific_text(out, *it, indent + 4);
    } else if (it->is_array()) {
      appendf(out, "%s%s:\n", pad.c_str(), key.c_str());
      int index = 0;
      for (const auto& el : *it) {
        if (el.is_object()) {
          appendf(out, "%s    [%d]:\n", pad.c_str(), index++);
          format_specific_text(out, el, indent + 8);
        } else {
          appendf(out, "%s    [%d]: %s\n", pad.c_str(), index++,
                  el.is_string() ? el.get<std::string>().c_str() : el.dump().c_str());
        }
      }
    } else {
      appendf(out, "%s%s: %s\n", pad.c_str(), key.c_str(),
              it->is_string() ? it->get<std::string>().c_str() : it->dump().c_str());
    }
  }
}

// The human text of one image, as qemu-img prints it.
std::string human_text(const ojson& j, Node* node) {
  std::string out;
  appendf(out, "image: %s\n", j["filename"].get<std::string>().c_str());
  appendf(out, "file format: %s\n", j["format"].get<std::string>().c_str());
  uint64_t vsize = j["virtual-size"];
  appendf(out, "virtual size: %s (%llu bytes)\n", size_to_str(vsize).c_str(),
          (unsigned long long)vsize);
  appendf(out, "disk size: %s\n", size_to_str(j["actual-size"].get<uint64_t>()).c_str());
  if (j.contains("cluster-size"))
    appendf(out, "cluster_size: %llu\n", (unsigned long long)j["cluster-size"].get<uint64_t>());
  if (j.value("dirty-flag", false)) out += "cleanly shut down: no\n";
  if (j.contains("backing-filename")) {
    std::string b = j["backing-filename"];
    std::string full = j["full-backing-filename"];
    if (b == full) {
      appendf(out, "backing file: %s\n", b.c_str());
    } else {
      appendf(out, "backing file: %s (actual path: %s)\n", b.c_str(), full.c_str());
    }
  }
  if (j.contains("backing-filename-format")) {
    appendf(out, "backing file format: %s\n",
            j["backing-filename-format"].get<std::string>().c_str());
  }
  std::vector<SnapshotEntry> snapshots = snapshots_of(node);
  if (!snapshots.empty()) {
    appendf(out, "Snapshot list:\n%s", snapshot_table_text(snapshots).c_str());
  }
  if (j.contains("format-specific")) {
    out += "Format specific information:\n";
    format_specific_text(out, j["format-specific"]["data"], 4);
  }
  return out;
}

// What info prints for one image: its JSON object and its human text.
struct LayerInfo {
  ojson json;
  std::string text;
  std::string backing;         // the backing file, joined to the image's directory
  std::string backing_format;  // empty: probed
};

Task<Result<LayerInfo>> co_layer_info(Engine& engine, const OpenSpec& spec) {
  STRATA_CO_TRY_ASSIGN(auto drive, co_await co_open_image(engine, spec));
  Node* node = drive->edge()->node();
  LayerInfo info;
  info.json = image_info_json(node);
  info.text = human_text(info.json, node);
  if (info.json.contains("full-backing-filename")) {
    info.backing = info.json["full-backing-filename"];
    info.backing_format = info.json.value("backing-filename-format", "");
  }
  co_await drive->co_close();
  co_return info;
}

// With --backing-chain, each layer is opened alone and then its backing
// file by name, as qemu-img does; nothing is printed unless all open.
Task<int> co_info(Engine& engine, OpenSpec spec, bool json, bool chain) {
  spec.no_backing = true;
  spec.no_data_file = true;  // named, never opened (as qemu-img info)
  std::vector<LayerInfo> layers;
  std::vector<std::string> seen;
  for (;;) {
    auto layer = co_await co_layer_info(engine, spec);
    if (!layer) {
      error_report(layer.error().message);
      co_return 1;
    }
    layers.push_back(std::move(*layer));
    const LayerInfo& l = layers.back();
    if (!chain || l.backing.empty()) break;
    seen.push_back(spec.filename);
    if (std::find(seen.begin(), seen.end(), l.backing) != seen.end()) {
      error_report("Backing file '" + l.backing + "' creates an infinite loop.");
      co_return 1;
    }
    spec.filename = l.backing;
    spec.format = l.backing_format;
    spec.image_opts = false;
  }
  if (json) {
    ojson arr = ojson::array();
    for (const auto& l : layers) arr.push_back(l.json);
    std::printf("%s\n", qemu_json_pretty(chain ? arr : layers[0].json).c_str());
  } else {
    for (size_t i = 0; i < layers.size(); i++) {
      std::printf("%s%s", i ? "\n" : "", layers[i].text.c_str());
    }
  }
  co_return 0;
}

}  // namespace

int cmd_info(Engine& engine, const Args& args) {
  enum { kBackingChain = kOptFirstOwn };
  auto longopts =
      long_options(kLongFormat | kLongOutput | kLongImageOpts | kLongObject | kLongForceShare,
                   {{"backing-chain", no_argument, nullptr, kBackingChain}});
  OptionParser p(args, "f:hU", longopts.data());
  CommonOptions common;
  bool chain = false;
  for (int c; (c = p.next()) != -1;) {
    OptionUse use = handle_common_option(c, p.arg, &common);
    if (use == OptionUse::kError) return 1;
    if (use == OptionUse::kHandled) continue;
    switch (c) {
      case kBackingChain:
        chain = true;
        break;
      case 'h':
        std::printf(
            "Usage: strata-img info [-f fmt] [--output=ofmt] [--backing-chain] [-U] filename\n");
        return 0;
      default:
        return 1;
    }
  }
  if (p.rest.size() != 1) {
    return usage_error("Expecting one image file name");
  }
  common.spec.filename = p.rest[0];
  return engine.run(co_info(engine, common.spec, common.json, chain));
}

}  // namespace strata::img
