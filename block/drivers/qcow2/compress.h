// Compressed clusters, as QEMU writes and reads them: raw deflate (zlib
// windowBits -12, compression type 0) or one zstd frame (compression type
// 1, default level, content size in the frame header).
// Thread rules: pure functions; safe on any thread.
#pragma once

#include <cstdint>
#include <span>

#include "strata/result.h"

namespace strata::qcow2 {

// Decompresses `in` until `out` is full; trailing input is ignored (the
// compressed length is only known to 512 bytes). `type` is the header's
// compression type (0 zlib, 1 zstd).
Result<void> decompress_cluster(uint8_t type, std::span<const uint8_t> in, std::span<uint8_t> out);
// Compresses `in` into `out`; returns the compressed length, or 0 when the
// result does not fit in `out` (the caller writes the cluster uncompressed).
size_t compress_cluster(uint8_t type, std::span<const uint8_t> in, std::span<uint8_t> out);

// The zlib halves of the above.
Result<void> inflate_cluster(std::span<const uint8_t> in, std::span<uint8_t> out);
size_t deflate_cluster(std::span<const uint8_t> in, std::span<uint8_t> out);

}  // namespace strata::qcow2
