#include "block/drivers/qcow2/compress.h"

#include <zlib.h>
#include <zstd.h>

#include <memory>

namespace strata::qcow2 {

namespace {

Error decompress_error() {
  return Error{EIO, "qcow2: could not decompress a compressed cluster"};
}

struct FreeDctx {
  void operator()(ZSTD_DCtx* c) const { ZSTD_freeDCtx(c); }
};
struct FreeCctx {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};

// Decodes frame after frame until `out` is full; every step must make
// progress, and the last frame must end exactly there (as QEMU).
Result<void> zstd_decompress(std::span<const uint8_t> in, std::span<uint8_t> out) {
  std::unique_ptr<ZSTD_DCtx, FreeDctx> ctx(ZSTD_createDCtx());
  if (!ctx) return Error{ENOMEM, "ZSTD_createDCtx failed"};
  ZSTD_inBuffer input{in.data(), in.size(), 0};
  ZSTD_outBuffer output{out.data(), out.size(), 0};
  size_t ret = 0;
  while (output.pos < output.size) {
    size_t in_before = input.pos, out_before = output.pos;
    ret = ZSTD_decompressStream(ctx.get(), &output, &input);
    if (ZSTD_isError(ret)) return decompress_error();
    if (input.pos <= in_before && output.pos <= out_before) return decompress_error();
  }
  if (ret > 0) return decompress_error();
  return {};
}

// One frame in one call, as QEMU: output that does not fit means the
// cluster is stored uncompressed.
size_t zstd_compress(std::span<const uint8_t> in, std::span<uint8_t> out) {
  std::unique_ptr<ZSTD_CCtx, FreeCctx> ctx(ZSTD_createCCtx());
  if (!ctx) return 0;
  ZSTD_inBuffer input{in.data(), in.size(), 0};
  ZSTD_outBuffer output{out.data(), out.size(), 0};
  size_t ret = ZSTD_compressStream2(ctx.get(), &output, &input, ZSTD_e_end);
  if (ret != 0) return 0;
  return output.pos;
}

}  // namespace

Result<void> inflate_cluster(std::span<const uint8_t> in, std::span<uint8_t> out) {
  z_stream z{};
  if (inflateInit2(&z, -12) != Z_OK) return Error{ENOMEM, "inflateInit2 failed"};
  z.next_in = const_cast<uint8_t*>(in.data());
  z.avail_in = uInt(in.size());
  z.next_out = out.data();
  z.avail_out = uInt(out.size());
  int ret = inflate(&z, Z_FINISH);
  bool full = z.avail_out == 0;
  inflateEnd(&z);
  if ((ret == Z_STREAM_END || ret == Z_BUF_ERROR) && full) return {};
  return decompress_error();
}

size_t deflate_cluster(std::span<const uint8_t> in, std::span<uint8_t> out) {
  z_stream z{};
  if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) != Z_OK) {
    return 0;
  }
  z.next_in = const_cast<uint8_t*>(in.data());
  z.avail_in = uInt(in.size());
  z.next_out = out.data();
  z.avail_out = uInt(out.size());
  int ret = deflate(&z, Z_FINISH);
  size_t produced = out.size() - z.avail_out;
  deflateEnd(&z);
  if (ret != Z_STREAM_END || produced >= out.size()) return 0;
  return produced;
}

Result<void> decompress_cluster(uint8_t type, std::span<const uint8_t> in, std::span<uint8_t> out) {
  if (type == 1) return zstd_decompress(in, out);
  return inflate_cluster(in, out);
}

size_t compress_cluster(uint8_t type, std::span<const uint8_t> in, std::span<uint8_t> out) {
  if (type == 1) return zstd_compress(in, out);
  return deflate_cluster(in, out);
}

}  // namespace strata::qcow2
