// The VMDK text descriptor: create type, extent lines, CIDs, parent hint.
//
// Contract: the text ends at its first NUL byte, as QEMU reads it.
// parse_descriptor() accepts the create types QEMU opens from a descriptor
// (monolithicFlat, vmfs, vmfsSparse, seSparse, twoGbMaxExtentSparse,
// twoGbMaxExtentFlat) and the extent lines QEMU uses: "RW SECTORS TYPE
// "FILE" [OFFSET]" with TYPE FLAT (needs OFFSET), VMFS (no OFFSET), SPARSE,
// VMFSSPARSE or SESPARSE (no OFFSET); like QEMU it skips other access modes,
// unknown types and lines of other shapes, and refuses a known type with a
// wrong number of fields ("Invalid extent line: ..."). Unlike QEMU's
// sscanf, which skips line ends while it looks for fields, one line is one
// extent: a blank line before an extent line does not count it twice.
// Thread rules: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "strata/result.h"

namespace strata::vmdk {

struct ExtentLine {
  std::string type;          // FLAT, SPARSE, VMFS, VMFSSPARSE, SESPARSE
  uint64_t sectors = 0;      // > 0
  std::string filename;      // as written (relative to the descriptor's folder)
  uint64_t flat_offset = 0;  // sectors into the file (FLAT, VMFS)
};

struct Descriptor {
  std::string create_type;
  std::vector<ExtentLine> extents;
};

// The text up to its first NUL.
std::string_view descriptor_text(std::string_view bytes);
// QEMU's vmdk_parse_description: the quoted value after the first
// occurrence of `name` (`name="value"`), at most 127 characters.
std::optional<std::string> description_value(std::string_view text, std::string_view name);
Result<Descriptor> parse_descriptor(std::string_view text);
// The hexadecimal number after the first "CID=" (or "parentCID=").
std::optional<uint32_t> read_cid(std::string_view text, bool parent);
// parentFileNameHint: none when absent, an error when its quote is not closed.
Result<std::optional<std::string>> parent_hint(std::string_view text);

}  // namespace strata::vmdk
