#include "block/drivers/vmdk/descriptor.h"

#include <cctype>
#include <cstdlib>

namespace strata::vmdk {

namespace {

// A cursor over one extent line, reading fields as QEMU's sscanf format
// "%10s %ld %10s \"%511[^\n\r\"]\" %ld" does, without crossing the line.
class LineScanner {
 public:
  explicit LineScanner(std::string_view line) : s_(line) {}

  std::optional<std::string> word() {
    skip_space();
    size_t start = i_;
    while (i_ < s_.size() && !is_space(s_[i_])) i_++;
    if (i_ == start) return std::nullopt;
    return std::string(s_.substr(start, i_ - start));
  }
  // A signed decimal number; saturates on overflow.
  std::optional<int64_t> number() {
    skip_space();
    size_t start = i_;
    if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) i_++;
    size_t digits = i_;
    while (i_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_]))) i_++;
    if (i_ == digits) return std::nullopt;
    std::string text(s_.substr(start, i_ - start));
    return std::strtoll(text.c_str(), nullptr, 10);
  }
  // `"name"`: 1 to 511 characters, no quote, no line end.
  std::optional<std::string> quoted() {
    skip_space();
    if (i_ >= s_.size() || s_[i_] != '"') return std::nullopt;
    size_t start = ++i_;
    while (i_ < s_.size() && s_[i_] != '"' && s_[i_] != '\r' && s_[i_] != '\n') i_++;
    size_t len = i_ - start;
    if (len == 0 || len > 511 || i_ >= s_.size() || s_[i_] != '"') return std::nullopt;
    i_++;
    return std::string(s_.substr(start, len));
  }

 private:
  static bool is_space(char c) { return std::isspace(static_cast<unsigned char>(c)); }
  void skip_space() {
    while (i_ < s_.size() && is_space(s_[i_])) i_++;
  }
  std::string_view s_;
  size_t i_ = 0;
};

bool known_type(const std::string& t) {
  return t == "FLAT" || t == "SPARSE" || t == "VMFS" || t == "VMFSSPARSE" || t == "SESPARSE";
}

Error invalid_line(std::string_view line) {
  return Error{EINVAL, "Invalid extent line: " + std::string(line)};
}

using MaybeExtent = std::optional<ExtentLine>;

// One line: an extent, nothing (a line QEMU skips), or an error.
Result<MaybeExtent> parse_extent_line(std::string_view line) {
  LineScanner sc(line);
  auto access = sc.word();
  if (!access) return MaybeExtent();
  auto sectors = sc.number();
  if (!sectors) return MaybeExtent();
  auto type = sc.word();
  if (!type || type->size() > 10) return MaybeExtent();
  auto name = sc.quoted();
  if (!name || *access != "RW") return MaybeExtent();
  auto offset = sc.number();
  if (*type == "FLAT") {
    if (!offset || *offset < 0) return invalid_line(line);
  } else if (offset) {
    return invalid_line(line);
  }
  if (*sectors <= 0 || !known_type(*type)) return MaybeExtent();
  ExtentLine e{*type, uint64_t(*sectors), *name, offset ? uint64_t(*offset) : 0};
  return MaybeExtent(e);
}

}  // namespace

std::string_view descriptor_text(std::string_view bytes) {
  return bytes.substr(0, bytes.find('\0'));
}

std::optional<std::string> description_value(std::string_view text, std::string_view name) {
  size_t at = text.find(name);
  if (at == std::string_view::npos) return std::nullopt;
  size_t start = at + name.size() + 2;  // past `="`
  if (start >= text.size()) return std::nullopt;
  size_t end = text.find('"', start);
  if (end == std::string_view::npos || end - start + 1 > 128) return std::nullopt;
  return std::string(text.substr(start, end - start));
}

Result<Descriptor> parse_descriptor(std::string_view text) {
  Descriptor d;
  auto ct = description_value(text, "createType");
  if (!ct) return Error{EINVAL, "invalid VMDK image descriptor"};
  static const char* const kTypes[] = {"monolithicFlat",       "vmfs",
                                       "vmfsSparse",           "seSparse",
                                       "twoGbMaxExtentSparse", "twoGbMaxExtentFlat"};
  bool known = false;
  for (const char* t : kTypes) known |= *ct == t;
  if (!known) return Error{ENOTSUP, "Unsupported image type '" + *ct + "'"};
  d.create_type = *ct;
  for (size_t pos = 0; pos < text.size();) {
    size_t nl = text.find('\n', pos);
    size_t end = nl == std::string_view::npos ? text.size() : nl;
    auto extent = parse_extent_line(text.substr(pos, end - pos));
    if (!extent) return std::move(extent).error();
    if (*extent) d.extents.push_back(**extent);
    pos = end + 1;
  }
  return d;
}

std::optional<uint32_t> read_cid(std::string_view text, bool parent) {
  std::string_view key = parent ? "parentCID" : "CID";
  size_t at = text.find(key);
  if (at == std::string_view::npos) return std::nullopt;
  size_t start = at + key.size() + 1;  // past "="
  if (start >= text.size()) return std::nullopt;
  std::string rest(text.substr(start, 32));
  char* end = nullptr;
  unsigned long v = std::strtoul(rest.c_str(), &end, 16);
  if (end == rest.c_str()) return std::nullopt;
  return uint32_t(v);
}

Result<std::optional<std::string>> parent_hint(std::string_view text) {
  std::string_view key = "parentFileNameHint";
  size_t at = text.find(key);
  if (at == std::string_view::npos) return std::optional<std::string>();
  size_t start = at + key.size() + 2;  // past `="`
  size_t end = start <= text.size() ? text.find('"', start) : std::string_view::npos;
  if (end == std::string_view::npos) {
    return Error{EINVAL, "vmdk: parentFileNameHint is not terminated"};
  }
  return std::optional<std::string>(std::string(text.substr(start, end - start)));
}

}  // namespace strata::vmdk
