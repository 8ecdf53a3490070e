// block-set-write-threshold and the BLOCK_WRITE_THRESHOLD event, over the
// nodes' write thresholds (block/core/write_threshold.h), as QEMU's
// block/write-threshold.c.
//
// Contract: the command arms (or, with 0, disarms) the threshold of the
// node named, found by node-name only ("Device 'x' not found" otherwise,
// GenericError); a negative write-threshold is taken modulo 2^64, as
// QEMU's uint64 visitor does. While the QmpContext lives, every threshold
// passed in its Engine's graph becomes one BLOCK_WRITE_THRESHOLD event
// {node-name, amount-exceeded, write-threshold}.
// Thread rules: loop-thread only.
#pragma once

namespace strata::qmp {

class QmpContext;

void register_write_threshold_commands(QmpContext& ctx);

}  // namespace strata::qmp
