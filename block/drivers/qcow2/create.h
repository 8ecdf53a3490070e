// Creating qcow2 images, byte-compatible with what qemu-img creates for the
// same options (used by strata-img create, and later by blockdev-create and
// snapshot creation).
//
// Contract: co_create_image() validates the options, then opens the file at
// `path` (created when missing) and takes QEMU's image locks on it before
// emptying it (block/drivers/file_create.h), then writes a complete empty
// image; the file is closed again on return. Option errors carry
// qemu-img's messages; an option error or a refused lock leaves the file
// untouched. With an external data file, that file is created (or
// emptied, under its image lock) with the image's size, under the name as
// given (relative to the working directory, as qemu-img), and the name is
// stored in the header.
// Thread rules: loop-thread only.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "block/core/types.h"
#include "block/drivers/file_create.h"
#include "strata/engine.h"
#include "strata/result.h"

namespace strata::qcow2 {

struct CreateOptions {
  uint64_t size = 0;
  uint64_t cluster_size = 65536;
  uint32_t version = 3;  // compat=1.1; 2 is compat=0.10
  bool lazy_refcounts = false;
  uint32_t refcount_bits = 16;
  Preallocation preallocation = Preallocation::kOff;
  std::string backing_file;
  std::string backing_format;
  // False when the caller already holds the file through the graph
  // (blockdev-create on an existing `file` node): its own locks would
  // conflict with the ones creating takes.
  bool lock_file = true;
  bool extended_l2 = false;
  uint8_t compression_type = 0;  // 0 zlib, 1 zstd
  std::string data_file;         // external data file (empty: none)
  bool data_file_raw = false;
  // The file protocol's hints (nocow, extent_size_hint), set on the
  // emptied file before anything is written to it.
  FileHints file_hints;
};

// Reads the options `compression_type`, `extended_l2`, `data_file` and
// `data_file_raw` of a qemu-img -o option map into `o` (create_options.cc).
Result<void> parse_feature_options(const std::map<std::string, std::string>& opts,
                                   CreateOptions* o);

// Parses a qemu-img compat value ("0.10", "v2", "1.1", "v3").
Result<uint32_t> parse_compat(const std::string& s);
Result<void> validate_create_options(const CreateOptions& o);
Task<Result<void>> co_create_image(Engine& engine, std::string path, CreateOptions options);

}  // namespace strata::qcow2
