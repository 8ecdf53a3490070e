// libFuzzer entry point for the QMP stream reader and dispatcher. Built when
// configuring with -DSTRATA_FUZZ=ON and clang (see docs/qmp.md, "Fuzzing");
// the same target replays a corpus in the unit tests.
#include "tests/fuzz/qmp_fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static strata::qmp::fuzz::Harness harness;
  harness.run_one(data, size);
  return 0;
}
