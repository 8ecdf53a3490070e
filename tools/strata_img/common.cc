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

bool qemu_driver_name(const std::string& name) {
  static const char* kNames[] = {"raw",
                                 "qcow2",
                                 "vmdk",
                                 "vdi",
                                 "vpc",
                                 "vhdx",
                                 "qed",
                                 "qcow",
                                 "luks",
                                 "parallels",
                                 "cloop",
                                 "dmg",
                                 "bochs",
                                 "vvfat",
                                 "file",
                                 "nbd",
                                 "null-co",
                                 "null-aio",
                                 "blkdebug",
                                 "blkverify",
                                 "throttle",
                                 "copy-on-read",
                                 "compress",
                                 "preallocate",
                                 "snapshot-access",
                                 "copy-before-write"};
  for (const char* n : kNames) {
    if (name == n) return true;
  }
  return false;
}

int usage_error(const std::string& message) {
  std::fprintf(stderr, "strata-img: %s\nTry 'strata-img --help' for more information\n",
               message.c_str());
  return 1;
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

namespace {

// The multiplier of a size suffix, 0 when `c` is not one.
uint64_t suffix_multiplier(char c) {
  switch (std::toupper(static_cast<unsigned char>(c))) {
    case 'B':
      return 1;
    case 'K':
      return uint64_t(1) << 10;
    case 'M':
      return uint64_t(1) << 20;
    case 'G':
      return uint64_t(1) << 30;
    case 'T':
      return uint64_t(1) << 40;
    case 'P':
      return uint64_t(1) << 50;
    case 'E':
      return uint64_t(1) << 60;
    default:
      return 0;
  }
}

// The integer part of a size: digits in `base` from `*pos`; kRange when it
// does not fit 64 bits, kInvalid when there are no digits.
SizeParse parse_digits(const std::string& s, size_t* pos, int base, uint64_t* out) {
  unsigned __int128 v = 0;
  size_t start = *pos;
  for (; *pos < s.size(); ++*pos) {
    int d = std::isdigit(static_cast<unsigned char>(s[*pos])) ? s[*pos] - '0'
            : base == 16 && std::isxdigit(static_cast<unsigned char>(s[*pos]))
                ? std::tolower(static_cast<unsigned char>(s[*pos])) - 'a' + 10
                : -1;
    if (d < 0) break;
    v = v * unsigned(base) + unsigned(d);
    if (v > UINT64_MAX) v = (unsigned __int128)UINT64_MAX + 1;
  }
  if (*pos == start) return SizeParse::kInvalid;
  if (v > UINT64_MAX) return SizeParse::kRange;
  *out = uint64_t(v);
  return SizeParse::kOk;
}

// The fraction after the point at `*pos`, as a 0.64 fixed-point value
// ("1.k" has none). An exponent makes the whole size invalid.
SizeParse parse_fraction(const std::string& s, size_t* pos, uint64_t* out) {
  ++*pos;
  unsigned __int128 num = 0, den = 1;
  for (; *pos < s.size() && std::isdigit(static_cast<unsigned char>(s[*pos])); ++*pos) {
    if (den < (unsigned __int128)1 << 100) {
      num = num * 10 + unsigned(s[*pos] - '0');
      den *= 10;
    }
  }
  size_t e = *pos;
  if (e < s.size() && (s[e] == 'e' || s[e] == 'E')) {
    size_t d = e + 1;
    if (d < s.size() && (s[d] == '+' || s[d] == '-')) d++;
    if (d < s.size() && std::isdigit(static_cast<unsigned char>(s[d]))) return SizeParse::kInvalid;
  }
  *out = uint64_t((num << 64) / den);
  return SizeParse::kOk;
}

}  // namespace

SizeParse parse_qemu_size(const std::string& s, uint64_t* out) {
  size_t pos = 0;
  while (pos < s.size() && std::isspace(static_cast<unsigned char>(s[pos]))) pos++;
  if (pos < s.size() && s[pos] == '-') return SizeParse::kInvalid;
  if (pos < s.size() && s[pos] == '+') pos++;
  uint64_t val = 0, frac = 0;
  bool hex = pos + 1 < s.size() && s[pos] == '0' && (s[pos + 1] == 'x' || s[pos + 1] == 'X');
  SizeParse r;
  if (hex) {
    pos += 2;
    r = parse_digits(s, &pos, 16, &val);
    if (r != SizeParse::kOk) return r;
    if (pos < s.size() && (s[pos] == '.' || suffix_multiplier(s[pos]))) return SizeParse::kInvalid;
  } else {
    r = parse_digits(s, &pos, 10, &val);
    if (r != SizeParse::kOk) return r;
    if (pos < s.size() && s[pos] == '.' && parse_fraction(s, &pos, &frac) != SizeParse::kOk) {
      return SizeParse::kInvalid;
    }
  }
  uint64_t mul = pos < s.size() ? suffix_multiplier(s[pos]) : 0;
  if (mul) pos++;
  if (pos != s.size()) return SizeParse::kInvalid;
  if (mul <= 1) {
    if (frac) return SizeParse::kInvalid;  // a fraction needs a scale
    *out = val;
    return SizeParse::kOk;
  }
  // 64.64 fixed point times the multiplier, the half rounded up.
  unsigned __int128 whole = (unsigned __int128)val * mul;
  unsigned __int128 part = (unsigned __int128)frac * mul;
  whole += (part >> 64) + ((part >> 63) & 1);
  if (whole > UINT64_MAX) return SizeParse::kRange;
  *out = uint64_t(whole);
  return SizeParse::kOk;
}

bool cvtnum(const std::string& name, const std::string& value, uint64_t* out, uint64_t max) {
  uint64_t v = 0;
  SizeParse r = parse_qemu_size(value, &v);
  if (r == SizeParse::kInvalid) {
    error_report("Invalid " + name + " specified. You may use k, M, G, T, P or E suffixes for");
    error_report("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
    return false;
  }
  if (r == SizeParse::kRange || v > max) {
    error_report("Invalid " + name + " specified. Must be between 0 and " + std::to_string(max) +
                 ".");
    return false;
  }
  *out = v;
  return true;
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
    if (!spec.format.empty()) {
      co_return Error{EINVAL, "--image-opts and --format are mutually exclusive"};
    }
    auto parsed = co_await qmp::co_parse_image_options(engine, spec.filename);
    if (!parsed) {
      co_return Error{parsed.error().code,
                      "Could not open '" + spec.filename + "': " + parsed.error().message};
    }
    opts = std::move(*parsed);
  } else {
    STRATA_CO_TRY_ASSIGN(opts, co_await co_filename_options(engine.loop(), engine.graph().drivers(),
                                                            spec.filename, spec.format));
  }
  if (spec.no_backing && has_backing_option(engine, opts.value("driver", ""))) {
    opts["backing"] = nullptr;
  }
  // QEMU's default for the file under a format: discards the format
  // passes on give the file's space back.
  if (opts.contains("file") && opts["file"].is_object() && !opts["file"].contains("discard")) {
    opts["file"]["discard"] = "unmap";
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
  if (spec.unmap) opts["discard"] = "unmap";
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
  if (spec.image_opts && !spec.format.empty()) {
    co_return Error{EINVAL, "--image-opts and --format are mutually exclusive"};
  }
  auto drive = co_await co_open_drive(engine, spec);
  if (!drive) {
    // The prober's errors already name the image as QEMU's open does
    // (block/drivers/probe/probe.h); anything else gets the prefix.
    std::string prefix = "Could not open '" + spec.filename + "': ";
    const std::string& message = drive.error().message;
    if (spec.format.empty() && message.rfind(prefix, 0) == 0) co_return drive.error();
    co_return Error{drive.error().code, prefix + message};
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

namespace {

// The layer qemu-img map names for a range no layer allocates: the last
// one it reads through, which is the one above a backing file the range
// lies past the end of (that layer reads zeroes itself).
int unallocated_depth(Node* top, Node* base, uint64_t offset) {
  int depth = 0;
  for (Node* n = top;; depth++) {
    Child* b = n->backing();
    if (!b || b->node() == base || offset >= b->node()->size()) return depth;
    n = b->node();
  }
}

}  // namespace

Task<Result<ChainStatus>> co_chain_status(Node* top, uint64_t offset, uint64_t bytes, Node* base) {
  STRATA_CO_TRY_ASSIGN(strata::ChainStatus st,
                       co_await co_block_status_above(*top, base, offset, bytes));
  ChainStatus out;
  out.bytes = st.bytes;
  out.present = st.allocated();
  out.depth = out.present ? static_cast<int>(st.depth) - 1 : unallocated_depth(top, base, offset);
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

namespace {

// One layer's answer, as bdrv_co_block_status gives it.
Task<Result<BlockStatus>> co_layer_status(Node* n, uint64_t offset, uint64_t bytes) {
  if (offset >= n->size()) {
    BlockStatus eof;
    eof.flags = kStatusEof;
    co_return eof;
  }
  STRATA_CO_TRY_ASSIGN(BlockStatus st, co_await n->co_block_status(offset, bytes, nullptr));
  Child* b = n->backing();
  if (!(st.flags & kStatusAllocated) && b && offset >= b->node()->size()) st.flags |= kStatusZero;
  co_return st;
}

}  // namespace

Task<Result<BlockStatus>> co_status_above(Node* top, uint64_t offset, uint64_t bytes, Node* base) {
  STRATA_CO_TRY_ASSIGN(BlockStatus st, co_await co_layer_status(top, offset, bytes));
  if (st.bytes == 0 || (st.flags & kStatusAllocated) || top == base) co_return st;
  bool has_eof = st.flags & kStatusEof;
  uint64_t eof = offset + st.bytes;
  bytes = st.bytes;
  for (Child* c = top->backing(); c && c->node() != base; c = c->node()->backing()) {
    STRATA_CO_TRY_ASSIGN(st, co_await co_layer_status(c->node(), offset, bytes));
    if (st.bytes == 0) {
      st.flags = kStatusZero | kStatusAllocated;
      st.bytes = bytes;
      break;
    }
    if (st.flags & kStatusAllocated) {
      st.flags &= ~kStatusEof;
      break;
    }
    bytes = st.bytes;
  }
  if (has_eof && offset + st.bytes == eof) st.flags |= kStatusEof;
  co_return st;
}

void Progress::print(float delta, int max) {
  float current = max == 0 ? delta : current_ + delta / 100 * float(max);
  if (current > 100) current = 100;
  current_ = current;
  if (current > last_print_ + min_skip_ || current < last_print_ - min_skip_ || current == 0 ||
      current == 100) {
    last_print_ = current;
    if (!enabled_) return;
    std::printf("    (%3.2f/100%%)\r", double(current));
    std::fflush(stdout);
  }
}

Task<void> RateLimit::co_account(uint64_t bytes) {
  if (!rate_ || !bytes) co_return;
  uint64_t now = Loop::now_ns();
  if (!start_ns_) start_ns_ = now;
  bytes_ += bytes;
  uint64_t due = start_ns_ + uint64_t(double(bytes_) * 1e9 / double(rate_));
  if (due > now + 1000000) co_await loop_.co_sleep((due - now) / 1000000);
}

void Progress::finish() {
  if (!enabled_) return;
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
    : storage_(args), longopts_(longopts) {
  for (auto& s : storage_) argv_.push_back(s.data());
  argv_.push_back(nullptr);
  // A leading ':' (after a '+', which must stay first) makes getopt report
  // a missing argument as ':' and print nothing: the messages are
  // qemu-img's.
  std::string opts = shortopts;
  size_t at = !opts.empty() && opts[0] == '+' ? 1 : 0;
  shortopts_ = opts.insert(at, ":");
  optind = 0;  // full reinitialization of getopt
  opterr = 0;
}

int OptionParser::next() {
  int c = getopt_long(int(argv_.size() - 1), argv_.data(), shortopts_.c_str(), longopts_, nullptr);
  if (c == -1) {
    for (int i = optind; i < int(argv_.size() - 1); i++) rest.push_back(argv_[i]);
    return -1;
  }
  if (c == '?' || c == ':') {
    std::string word = optind > 0 && optind <= int(argv_.size() - 1) ? argv_[optind - 1] : "";
    usage_error((c == ':' ? "missing argument for option '" : "unrecognized option '") + word +
                "'");
    return '?';
  }
  arg = optarg ? optarg : "";
  return c;
}

}  // namespace strata::img
