// The -o options of creating an image (create, convert, measure) and of
// amend, as qemu-img's QemuOpts lists them: the format's options followed by
// the file protocol's, each with a type that its value must parse as, a
// help text and a default. Only options strata-img implements are listed
// (no encryption; see docs/tools/strata-img.md).
//
// Contract: CreateOptionSet::parse() type-checks each value with QemuOpts'
// messages; the format's own checks (cluster size, compat, ...) are left to
// the caller, after the "Formatting ..." line, as qemu-img orders them.
// Thread rules: plain data, no I/O besides the help and Formatting output.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "strata/result.h"

namespace strata::img {

enum class OptType { kString, kSize, kNumber, kBool };

struct OptDesc {
  const char* name;
  OptType type;
  const char* help;
  const char* def;  // printed on the Formatting line when not set; null: none
};

// Whether a -o argument is well formed (qemu-img's is_valid_option_list):
// not empty, not starting with a comma, not ending in an odd run of commas.
bool valid_option_list(const std::string& text);
// Whether any element of a -o list is "help" or "?".
bool has_help_option(const std::string& text);
// A size-typed option value, with QemuOpts' messages ("Parameter 'size'
// expects a non-negative number below 2^64 ...").
Result<uint64_t> parse_size_option(const std::string& name, const std::string& value);

class CreateOptionSet {
 public:
  // The creation options of `format` (null for formats strata-img cannot
  // create), or its amend options.
  static std::optional<CreateOptionSet> for_create(const std::string& format);
  static std::optional<CreateOptionSet> for_amend(const std::string& format);

  // Parses a -o list (elements "name=value", or "name" for a flag set to
  // on) into the set; later values replace earlier ones.
  Result<void> parse(const std::string& text);
  // Sets one option from the command line (-b, -F, the size).
  void set(const std::string& name, const std::string& value) { values_[name] = value; }
  void erase(const std::string& name) { values_.erase(name); }
  bool has(const std::string& name) const { return values_.count(name) > 0; }
  // The value given, or "".
  std::string get(const std::string& name) const;
  // A size or number option (already type-checked), or `def`.
  uint64_t number(const std::string& name, uint64_t def) const;
  // A bool option (already type-checked), or `def`.
  bool flag(const std::string& name, bool def) const;
  const std::map<std::string, std::string>& values() const { return values_; }

  // "Formatting 'FILE', fmt=FMT name=value ..." as qemu-img prints it.
  std::string formatting_line(const std::string& filename) const;
  // qemu-img's -o help text: "Supported FMT options:" and the protocol
  // hint without a file name, "Supported options:" (format and protocol
  // options together) with one; amend: "Amend options for 'FMT':".
  std::string help_text(bool with_filename) const;

 private:
  const OptDesc* find(const std::string& name) const;
  std::string format_;
  bool amend_ = false;
  std::vector<OptDesc> format_opts_;
  std::vector<OptDesc> protocol_opts_;
  std::map<std::string, std::string> values_;
};

}  // namespace strata::img
