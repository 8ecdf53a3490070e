#include "block/drivers/qcow2/compress.h"

#include <zlib.h>

namespace strata::qcow2 {

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
  return Error{EIO, "qcow2: could not decompress a compressed cluster"};
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

}  // namespace strata::qcow2
