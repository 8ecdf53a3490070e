// The copy loop of strata-img convert (also used by commit/rebase later).
#pragma once

#include "strata_img/common.h"

namespace strata::img {

struct ConvertPlan {
  bool compress = false;
  bool out_of_order = false;  // -W
  bool target_has_backing = false;
  int parallel = 8;             // -m
  uint64_t sparse_size = 4096;  // -S; 0 disables zero detection
  uint64_t cluster_size = 0;    // target cluster size (compressed writes)
};

// Copies all of `src` (through its backing chain) into `dst`, then flushes.
Task<Result<void>> co_copy_image(Engine& engine, const ConvertPlan& plan, Node* src, Child* dst,
                                 bool dst_zeroed, Progress* progress);

}  // namespace strata::img
