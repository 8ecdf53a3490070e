#include "strata_img/create_opts.h"

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdlib>

#include "strata_img/common.h"

namespace strata::img {

namespace {

// QEMU's qcow2 creation options, in its order, less encryption; the
// amend list is QEMU's amend list, less encryption.
const std::vector<OptDesc> kQcow2Create = {
    {"cluster_size", OptType::kSize, "qcow2 cluster size", "65536"},
    {"extended_l2", OptType::kBool, "Extended L2 tables", "off"},
    {"preallocation", OptType::kString,
     "Preallocation mode (allowed values: off, metadata, falloc, full)", nullptr},
    {"compression_type", OptType::kString, "Compression method used for image cluster compression",
     "zlib"},
    {"size", OptType::kSize, "Virtual disk size", nullptr},
    {"compat", OptType::kString, "Compatibility level (v2 [0.10] or v3 [1.1])", nullptr},
    {"backing_file", OptType::kString, "File name of a base image", nullptr},
    {"backing_fmt", OptType::kString, "Image format of the base image", nullptr},
    {"data_file", OptType::kString, "File name of an external data file", nullptr},
    {"data_file_raw", OptType::kBool, "The external data file must stay valid as a raw image",
     nullptr},
    {"lazy_refcounts", OptType::kBool, "Postpone refcount updates", "off"},
    {"refcount_bits", OptType::kNumber, "Width of a reference count entry in bits", "16"},
};

const std::vector<OptDesc> kQcow2Amend = {
    {"size", OptType::kSize, "Virtual disk size", nullptr},
    {"compat", OptType::kString, "Compatibility level (v2 [0.10] or v3 [1.1])", nullptr},
    {"backing_file", OptType::kString, "File name of a base image", nullptr},
    {"backing_fmt", OptType::kString, "Image format of the base image", nullptr},
    {"data_file", OptType::kString, "File name of an external data file", nullptr},
    {"data_file_raw", OptType::kBool, "The external data file must stay valid as a raw image",
     nullptr},
    {"lazy_refcounts", OptType::kBool, "Postpone refcount updates", nullptr},
    {"refcount_bits", OptType::kNumber, "Width of a reference count entry in bits", nullptr},
};

const std::vector<OptDesc> kRawCreate = {
    {"size", OptType::kSize, "Virtual disk size", nullptr},
};

// The file protocol's options (file-posix).
const std::vector<OptDesc> kFileCreate = {
    {"size", OptType::kSize, "Virtual disk size", nullptr},
    {"nocow", OptType::kBool, "Turn off copy-on-write (valid only on btrfs)", nullptr},
    {"preallocation", OptType::kString, "Preallocation mode (allowed values: off, falloc, full)",
     nullptr},
    {"extent_size_hint", OptType::kSize, "Extent size hint for the image file, 0 to disable",
     nullptr},
};

// Splits a -o list at single commas (",," is a comma).
std::vector<std::string> split_options(const std::string& s) {
  std::vector<std::string> parts(1);
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] == ',' && i + 1 < s.size() && s[i + 1] == ',') {
      parts.back() += ',';
      i++;
    } else if (s[i] == ',') {
      parts.emplace_back();
    } else {
      parts.back() += s[i];
    }
  }
  return parts;
}

bool bool_word(const std::string& v, bool* out) {
  for (const char* w : {"on", "yes", "true", "y"}) {
    if (v == w) return *out = true, true;
  }
  for (const char* w : {"off", "no", "false", "n"}) {
    if (v == w) return *out = false, true;
  }
  return false;
}

// strtoull with base 0 (hex and octal too), as qemu_strtou64.
bool parse_number(const std::string& v, uint64_t* out, bool* range) {
  *range = false;
  if (v.empty() || v[0] == '-' || std::isspace(static_cast<unsigned char>(v[0]))) return false;
  errno = 0;
  char* end = nullptr;
  *out = std::strtoull(v.c_str(), &end, 0);
  if (end == v.c_str() || *end) return false;
  *range = errno == ERANGE;
  return !*range;
}

Result<void> check_type(const OptDesc& d, const std::string& v) {
  std::string name = d.name;
  switch (d.type) {
    case OptType::kBool: {
      bool b;
      if (!bool_word(v, &b)) return Error{EINVAL, "Parameter '" + name + "' expects 'on' or 'off'"};
      return {};
    }
    case OptType::kNumber: {
      uint64_t n;
      bool range;
      if (parse_number(v, &n, &range)) return {};
      if (range)
        return Error{EINVAL, "Value '" + v + "' is too large for parameter '" + name + "'"};
      return Error{EINVAL, "Parameter '" + name + "' expects a number"};
    }
    case OptType::kSize: {
      uint64_t n;
      SizeParse r = parse_qemu_size(v, &n);
      if (r == SizeParse::kOk) return {};
      if (r == SizeParse::kRange) {
        return Error{EINVAL, "Value '" + v + "' is out of range for parameter '" + name + "'"};
      }
      return Error{EINVAL, "Parameter '" + name +
                               "' expects a non-negative number below 2^64\n"
                               "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, "
                               "tera-, peta-\nand exabytes, respectively."};
    }
    case OptType::kString:
      return {};
  }
  return {};
}

std::string help_line(const OptDesc& d) {
  static const char* kTypes[] = {"str", "size", "num", "bool (on/off)"};
  std::string s = std::string("  ") + d.name + "=<" + kTypes[int(d.type)] + ">";
  if (s.size() < 24) s.append(24 - s.size(), ' ');
  return s + " - " + d.help;
}

}  // namespace

Result<uint64_t> parse_size_option(const std::string& name, const std::string& value) {
  OptDesc d{name.c_str(), OptType::kSize, "", nullptr};
  STRATA_TRY(check_type(d, value));
  uint64_t v = 0;
  parse_qemu_size(value, &v);
  return v;
}

bool valid_option_list(const std::string& text) {
  if (text.empty() || text[0] == ',') return false;
  size_t commas = 0;
  while (commas < text.size() && text[text.size() - 1 - commas] == ',') commas++;
  return commas % 2 == 0;
}

bool has_help_option(const std::string& text) {
  for (const auto& part : split_options(text)) {
    if (part == "help" || part == "?") return true;
  }
  return false;
}

std::optional<CreateOptionSet> CreateOptionSet::for_create(const std::string& format) {
  CreateOptionSet set;
  set.format_ = format;
  if (format == "qcow2") {
    set.format_opts_ = kQcow2Create;
  } else if (format == "raw") {
    set.format_opts_ = kRawCreate;
  } else {
    return std::nullopt;
  }
  set.protocol_opts_ = kFileCreate;
  return set;
}

std::optional<CreateOptionSet> CreateOptionSet::for_amend(const std::string& format) {
  if (format != "qcow2") return std::nullopt;
  CreateOptionSet set;
  set.format_ = format;
  set.amend_ = true;
  set.format_opts_ = kQcow2Amend;
  return set;
}

const OptDesc* CreateOptionSet::find(const std::string& name) const {
  for (const auto* list : {&format_opts_, &protocol_opts_}) {
    for (const auto& d : *list) {
      if (name == d.name) return &d;
    }
  }
  return nullptr;
}

Result<void> CreateOptionSet::parse(const std::string& text) {
  for (const auto& part : split_options(text)) {
    auto eq = part.find('=');
    std::string name = part.substr(0, eq);
    std::string value = eq == std::string::npos ? "on" : part.substr(eq + 1);
    const OptDesc* d = find(name);
    if (!d && eq == std::string::npos && name.rfind("no", 0) == 0 && find(name.substr(2))) {
      d = find(name.substr(2));  // "noflag" sets a flag off
      if (d->type == OptType::kBool) {
        name = name.substr(2);
        value = "off";
      }
    }
    if (!d) return Error{EINVAL, "Invalid parameter '" + name + "'"};
    STRATA_TRY(check_type(*d, value));
    values_[name] = value;
  }
  return {};
}

std::string CreateOptionSet::get(const std::string& name) const {
  auto it = values_.find(name);
  return it == values_.end() ? std::string() : it->second;
}

uint64_t CreateOptionSet::number(const std::string& name, uint64_t def) const {
  auto it = values_.find(name);
  if (it == values_.end()) return def;
  const OptDesc* d = find(name);
  uint64_t v = def;
  bool range;
  if (d && d->type == OptType::kNumber) {
    parse_number(it->second, &v, &range);
  } else {
    parse_qemu_size(it->second, &v);
  }
  return v;
}

bool CreateOptionSet::flag(const std::string& name, bool def) const {
  auto it = values_.find(name);
  bool v = def;
  if (it != values_.end()) bool_word(it->second, &v);
  return v;
}

std::string CreateOptionSet::formatting_line(const std::string& filename) const {
  std::string s = "Formatting '" + filename + "', fmt=" + format_;
  std::vector<const OptDesc*> seen;
  auto print = [&](const OptDesc& d) {
    for (const OptDesc* p : seen) {
      if (std::string(p->name) == d.name) return;  // duplicates appear once, first place
    }
    seen.push_back(&d);
    auto it = values_.find(d.name);
    if (it == values_.end() && !d.def) return;
    std::string value = it == values_.end() ? d.def : it->second;
    s += std::string(" ") + d.name + "=";
    if (it != values_.end() && (d.type == OptType::kSize || d.type == OptType::kNumber)) {
      s += std::to_string(number(d.name, 0));
    } else if (d.type == OptType::kString) {
      for (char c : value) s += c == ',' ? std::string(",,") : std::string(1, c);
    } else {
      s += value;
    }
  };
  for (const auto& d : format_opts_) print(d);
  for (const auto& d : protocol_opts_) print(d);
  return s;
}

std::string CreateOptionSet::help_text(bool with_filename) const {
  std::vector<std::string> lines;
  std::vector<std::string> names;
  auto add = [&](const std::vector<OptDesc>& list) {
    for (const auto& d : list) {
      if (std::find(names.begin(), names.end(), d.name) != names.end()) continue;
      names.push_back(d.name);
      lines.push_back(help_line(d));
    }
  };
  add(format_opts_);
  if (with_filename) add(protocol_opts_);
  std::sort(lines.begin(), lines.end());
  std::string out;
  if (amend_) {
    out = "Amend options for '" + format_ + "':\n";
  } else {
    out = with_filename ? "Supported options:\n" : "Supported " + format_ + " options:\n";
  }
  for (const auto& l : lines) out += l + "\n";
  if (!amend_ && !with_filename) {
    out +=
        "\nThe protocol level may support further options.\n"
        "Specify the target filename to include those options.\n";
  }
  return out;
}

}  // namespace strata::img
