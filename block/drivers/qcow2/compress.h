// Compressed clusters: raw deflate (zlib windowBits -12) as QEMU writes them.
// Thread rules: pure functions; safe on any thread.
#pragma once

#include <cstdint>
#include <span>

#include "strata/result.h"

namespace strata::qcow2 {

// Inflates `in` until `out` is full; trailing input is ignored (QEMU only
// knows the compressed length to 512 bytes).
Result<void> inflate_cluster(std::span<const uint8_t> in, std::span<uint8_t> out);
// Deflates `in` into `out`; returns the compressed length, or 0 when the
// result would not be smaller than `out` (the caller writes uncompressed).
size_t deflate_cluster(std::span<const uint8_t> in, std::span<uint8_t> out);

}  // namespace strata::qcow2
