#include "block/drivers/zero_status.h"

namespace strata {

Task<Result<BlockStatus>> co_add_file_zero_status(Child* file, BlockStatus st) {
  if (st.map_offset >= file->node()->size()) {
    st.flags |= kStatusZero;
    co_return st;
  }
  auto inner = co_await file->co_block_status(st.map_offset, st.bytes);
  if (!inner) co_return st;
  if ((inner->flags & kStatusEof) && (inner->bytes == 0 || (inner->flags & kStatusZero))) {
    st.flags |= kStatusZero;
    co_return st;
  }
  st.bytes = std::min(st.bytes, inner->bytes);
  if (inner->flags & kStatusZero) st.flags |= kStatusZero;
  co_return st;
}

}  // namespace strata
