#include "strata_img/common.h"

#include <cmath>
#include <cstdio>

#include "block/core/block_status.h"
#include "block/core/filename.h"
#include "block/core/graph.h"
#include "block/core/options.h"
#include "qmp/block_schema.h"

namespace strata::img {

namespace {
// QEMU prints the hint of a refused image lock on a line of its own;
// Strata's errors carry it after ": " (block/core/image_lock.h).
std::string with_hint_lines(std::string message) {
  static const std::string kLockHint = " lock: Is another process using the image [";
  for (size_t at = message.find(kLockHint); at != std::string::npos;
       at = message.find(kLockHint, at)) {
    message.replace(at, 7, " lock\n");
  }
  return message;
}
}  // namespace

void error_report(const std::string& message) {
  std::fprintf(stderr, "strata-img: %s\n", with_hint_lines(message).c_str());
}

std::string size_to_str(uint64_t val) {
  static const char* suffixes[] = {"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"};
  int exp = 0;
  std::frexp(double(val) / (1000.0 / 1024.0), &exp);
  int i = (exp - 1) / 10;
  if (i < 0) i = 0;
  if (i > 6) i = 6;
  uint64_t div = uint64_t(1) << (i * 10);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%0.3g %sB", double(val) / double(div), suffixes[i]);
  return buf;
}

bool parse_option_string(const std::string& s, std::map<std::string, std::string>* out) {
  std::vector<std::string> parts;
  std::string cur;
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] == ',') {
      if (i + 1 < s.size() && s[i + 1] == ',') {
        cur += ',';
        i++;
        continue;
      }
      parts.push_back(cur);
      cur.clear();
      continue;
    }
    cur += s[i];
  }
  parts.push_back(cur);
  for (const auto& p : parts) {
    if (p.empty()) continue;
    auto eq = p.find('=');
    if (eq == std::string::npos) {
      (*out)[p] = "on";
    } else {
      (*out)[p.substr(0, eq)] = p.substr(eq + 1);
    }
  }
  return true;
}

bool parse_img_size(const std::string& s, uint64_t* out) {
  if (!s.empty() && (s.back() == 'b' || s.back() == 'B') && s.size() >= 2 &&
      std::isdigit(static_cast<unsigned char>(s[s.size() - 2]))) {
    uint64_t v;
    if (!parse_size(s.substr(0, s.size() - 1), &v)) return false;
    *out = v * 512;
    return true;
  }
  return parse_size(s, out);
}

namespace {

// Formats that can have a backing file take the option "backing".
bool has_backing_option(Engine& engine, const std::string& driver) {
  const DriverSpec* spec = engine.graph().drivers().find(driver);
  if (!spec) return false;
  for (const auto& o : spec->options) {
    if (o.name == "backing") return true;
  }
  return false;
}

}  // namespace

Task<Result<nlohmann::json>> co_image_options(Engine& engine, OpenSpec spec) {
  nlohmann::json opts;
  if (spec.image_opts) {
    STRATA_CO_TRY_ASSIGN(opts, qmp::parse_image_options(engine.graph().drivers(), spec.filename));
  } else {
    STRATA_CO_TRY_ASSIGN(opts, co_await co_filename_options(engine.loop(), engine.graph().drivers(),
                                                            spec.filename, spec.format));
  }
  if (spec.no_backing && has_backing_option(engine, opts.value("driver", ""))) {
    opts["backing"] = nullptr;
  }
  if (spec.force_share) opts["force-share"] = true;
  if (spec.check_mode && opts.value("driver", "") == "qcow2") opts["x-check"] = true;
  if (spec.no_data_file && opts.value("driver", "") == "qcow2") opts["x-no-data-file"] = true;
  if (spec.cache == "none" || spec.cache == "directsync") {
    opts["cache"] = {{"direct", true}};
  } else if (spec.cache == "unsafe") {
    opts["cache"] = {{"no-flush", true}};
  }
  if (!spec.writable) opts["read-only"] = true;
  co_return opts;
}

namespace {

// The name's options (file name rules, probing) and the node, one error.
Task<Result<std::unique_ptr<Drive>>> co_open_drive(Engine& engine, OpenSpec spec) {
  STRATA_CO_TRY_ASSIGN(auto opts, co_await co_image_options(engine, spec));
  DriveOptions d;
  d.writable = spec.writable;
  d.share_rw = spec.force_share;
  d.user = "strata-img";
  co_return co_await Drive::co_open(engine, opts, d);
}

}  // namespace

Task<Result<std::unique_ptr<Drive>>> co_open_image(Engine& engine, OpenSpec spec) {
  auto drive = co_await co_open_drive(engine, spec);
  if (!drive) {
    co_return Error{drive.error().code,
                    "Could not open '" + spec.filename + "': " + drive.error().message};
  }
  co_return drive;
}

std::vector<Node*> backing_chain(Node* top) {
  std::vector<Node*> out;
  for (Node* n = top; n;) {
    out.push_back(n);
    Child* b = n->backing();
    n = b ? b->node() : nullptr;
  }
  return out;
}

std::string node_filename(Node* node) {
  return node->driver().filename();
}

std::string node_format(Node* node) {
  return node->driver_name();
}

Task<Result<ChainStatus>> co_chain_status(Node* top, uint64_t offset, uint64_t bytes, Node* base) {
  STRATA_CO_TRY_ASSIGN(strata::ChainStatus st,
                       co_await co_block_status_above(*top, base, offset, bytes));
  ChainStatus out;
  out.bytes = st.bytes;
  out.present = st.allocated();
  out.depth = static_cast<int>(out.present ? st.depth : st.bottom) - 1;
  out.zero = st.flags & kStatusZero;
  if (out.present) {
    out.data = st.flags & kStatusData;
    out.has_offset = st.flags & kStatusOffsetValid;
    out.offset = st.map_offset;
    out.map_node = st.map_node;
  } else if (st.flags & kStatusOffsetValid) {
    // As qemu-img map: an offset the last layer gives goes with it (the
    // unallocated subclusters of an allocated qcow2 cluster).
    out.has_offset = true;
    out.offset = st.map_offset;
    out.map_node = st.map_node;
  }
  co_return out;
}

void Progress::update(double percent) {
  if (!enabled_) return;
  if (percent - last_ < 0.01 && percent < 100) return;
  last_ = percent;
  std::printf("    (%3.2f/100%%)\r", percent);
  std::fflush(stdout);
}

void Progress::finish() {
  if (!enabled_) return;
  update(100);
  std::printf("\n");
  std::fflush(stdout);
}

OptionUse handle_common_option(int c, const std::string& arg, CommonOptions* out) {
  switch (c) {
    case 'f':
      out->spec.format = arg;
      return OptionUse::kHandled;
    case 'U':
      out->spec.force_share = true;
      return OptionUse::kHandled;
    case 'q':
      out->quiet = true;
      return OptionUse::kHandled;
    case 't':
      out->spec.cache = arg;
      return OptionUse::kHandled;
    case kOptImageOpts:
      out->spec.image_opts = true;
      return OptionUse::kHandled;
    case kOptObject:
      return OptionUse::kHandled;
    case kOptOutput:
      if (arg == "json" || arg == "human") {
        out->json = arg == "json";
        return OptionUse::kHandled;
      }
      error_report("--output must be used with human or json as argument.");
      return OptionUse::kError;
    default:
      return OptionUse::kNotCommon;
  }
}

std::vector<struct option> long_options(unsigned common, std::initializer_list<struct option> own) {
  static constexpr std::pair<unsigned, struct option> kCommon[] = {
      {kLongFormat, {"format", required_argument, nullptr, 'f'}},
      {kLongImageOpts, {"image-opts", no_argument, nullptr, kOptImageOpts}},
      {kLongObject, {"object", required_argument, nullptr, kOptObject}},
      {kLongOutput, {"output", required_argument, nullptr, kOptOutput}},
      {kLongForceShare, {"force-share", no_argument, nullptr, 'U'}},
  };
  std::vector<struct option> all = {{"help", no_argument, nullptr, 'h'}};
  for (const auto& [bit, opt] : kCommon) {
    if (common & bit) all.push_back(opt);
  }
  all.insert(all.end(), own.begin(), own.end());
  all.push_back({nullptr, 0, nullptr, 0});
  return all;
}

OptionParser::OptionParser(const Args& args, const char* shortopts, const struct option* longopts)
    : storage_(args), shortopts_(shortopts), longopts_(longopts) {
  for (auto& s : storage_) argv_.push_back(s.data());
  argv_.push_back(nullptr);
  optind = 0;  // full reinitialization of getopt
  opterr = 1;
}

int OptionParser::next() {
  int c = getopt_long(int(argv_.size() - 1), argv_.data(), shortopts_, longopts_, nullptr);
  if (c == -1) {
    for (int i = optind; i < int(argv_.size() - 1); i++) rest.push_back(argv_[i]);
    return -1;
  }
  arg = optarg ? optarg : "";
  return c;
}

}  // namespace strata::img
