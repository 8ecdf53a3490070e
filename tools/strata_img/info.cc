// strata-img info [-f FMT] [--output=human|json] [--backing-chain] [-U] [--image-opts] FILE
#include <sys/stat.h>

#include <algorithm>

#include <cstdio>
#include <ctime>

#include "block/drivers/qcow2/qcow2.h"
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
  if (backing.empty() || backing[0] == '/' || backing.find("://") != std::string::npos)
    return backing;
  auto slash = image.rfind('/');
  return slash == std::string::npos ? backing : image.substr(0, slash + 1) + backing;
}

ojson snapshot_json(const qcow2::Snapshot& s) {
  ojson j;
  if (s.has_icount && s.icount >= 0) j["icount"] = s.icount;
  j["vm-clock-nsec"] = s.vm_clock_nsec % 1000000000ull;
  j["name"] = s.name;
  j["date-sec"] = s.date_sec;
  j["date-nsec"] = s.date_nsec;
  j["vm-clock-sec"] = s.vm_clock_nsec / 1000000000ull;
  j["id"] = s.id;
  j["vm-state-size"] = s.vm_state_size;
  return j;
}

// QEMU's field order for the qcow2 format-specific data; other keys follow.
ojson ordered_format_specific(const nlohmann::json& spec) {
  static const char* order[] = {"compat",      "compression-type", "lazy-refcounts",
                                "bitmaps",     "refcount-bits",    "corrupt",
                                "extended-l2", "data-file",        "data-file-raw"};
  ojson data;
  const auto& in = spec["data"];
  for (const char* k : order) {
    if (in.contains(k)) data[k] = ojson::parse(in[k].dump());
  }
  // Each bitmap as QEMU lists it: flags, name, granularity.
  if (data.contains("bitmaps")) {
    for (auto& b : data["bitmaps"]) {
      ojson e;
      for (const char* k : {"flags", "name", "granularity"}) e[k] = b[k];
      b = e;
    }
  }
  for (auto it = in.begin(); it != in.end(); ++it) {
    if (!data.contains(it.key())) data[it.key()] = ojson::parse(it->dump());
  }
  ojson out;
  out["type"] = spec["type"];
  out["data"] = data;
  return out;
}

}  // namespace

ojson image_info_json(Node* node) {
  ojson j;
  auto* q = dynamic_cast<qcow2::Qcow2Driver*>(&node->driver());
  std::string filename = node_filename(node);
  if (q && !q->snapshots().empty()) {
    ojson list = ojson::array();
    for (const auto& s : q->snapshots()) list.push_back(snapshot_json(s));
    j["snapshots"] = list;
  }
  if (q && !q->header().backing_format.empty())
    j["backing-filename-format"] = q->header().backing_format;
  j["virtual-size"] = node->size();
  j["filename"] = filename;
  if (q) j["cluster-size"] = q->header().cluster_size();
  j["format"] = node_format(node);
  Child* file = node->file();
  j["actual-size"] = allocated_bytes(file ? node_filename(file->node()) : filename);
  if (q) j["format-specific"] = ordered_format_specific(node->driver().format_specific());
  if (q && !q->header().backing_file.empty()) {
    j["full-backing-filename"] = join_backing(filename, q->header().backing_file);
    j["backing-filename"] = q->header().backing_file;
  }
  j["dirty-flag"] = q && (q->header().incompatible_features & qcow2::kIncompatDirty) != 0;
  return j;
}

std::string snapshot_table_text(const std::vector<qcow2::Snapshot>& snaps) {
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
    if (s.has_icount && s.icount >= 0)
      std::snprintf(icount, sizeof icount, "%lld", (long long)s.icount);
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
  auto* q = dynamic_cast<qcow2::Qcow2Driver*>(&node->driver());
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
  if (q && !q->snapshots().empty()) {
    appendf(out, "Snapshot list:\n%s", snapshot_table_text(q->snapshots()).c_str());
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
