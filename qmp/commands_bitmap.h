// The dirty bitmap QMP commands (block-dirty-bitmap-*, the sha256 debug
// command, block-dirty-bitmap-populate), their transaction actions and the
// "dirty-bitmaps" member of query-named-block-nodes / query-block.
// Thread rules: loop-thread only.
#pragma once

namespace strata::qmp {

class QmpContext;

void register_bitmap_commands(QmpContext& ctx);

}  // namespace strata::qmp
