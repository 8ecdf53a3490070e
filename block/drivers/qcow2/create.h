// Creating qcow2 images, byte-compatible with what qemu-img creates for the
// same options (used by strata-img create, and later by blockdev-create and
// snapshot creation).
//
// Contract: co_create_image() creates (or truncates) the file at `path` and
// writes a complete empty image; the file is closed again on return. Option
// errors carry qemu-img's messages.
// Thread rules: loop-thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "block/core/types.h"
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
  // Called with the new, empty file before anything is written to it (a
  // tool's file hints, such as copy-on-write off); may be empty.
  std::function<void(int fd)> prepare_file;
};

// Parses a qemu-img compat value ("0.10", "v2", "1.1", "v3").
Result<uint32_t> parse_compat(const std::string& s);
Result<void> validate_create_options(const CreateOptions& o);
Task<Result<void>> co_create_image(Engine& engine, std::string path, CreateOptions options);

}  // namespace strata::qcow2
