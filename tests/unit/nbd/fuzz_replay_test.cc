// Replays the NBD fuzz target (tests/fuzz/nbd_fuzz_target.cc) on seed
// sessions and deterministic mutations of them, so that the parsers and the
// connection state machine see malformed input in every test run.
#define STRATA_NBD_FUZZ_NO_ENTRY
#include "fuzz/nbd_fuzz_target.cc"

#include <gtest/gtest.h>

#include <random>

namespace strata::nbd::fuzz {
namespace {

std::vector<uint8_t> request(uint16_t flags, uint16_t type, uint64_t offset, uint32_t length,
                             bool extended) {
  std::vector<uint8_t> v;
  put32(v, extended ? kExtendedRequestMagic : kRequestMagic);
  v.push_back(static_cast<uint8_t>(flags >> 8));
  v.push_back(static_cast<uint8_t>(flags));
  v.push_back(static_cast<uint8_t>(type >> 8));
  v.push_back(static_cast<uint8_t>(type));
  put64(v, 0x1234);
  put64(v, offset);
  if (extended) {
    put64(v, length);
  } else {
    put32(v, length);
  }
  return v;
}

// Seeds: a session of every command in each mode.
std::vector<std::vector<uint8_t>> seeds() {
  std::vector<std::vector<uint8_t>> out;
  for (uint8_t mode : {1, 2}) {
    bool ext = mode == 2;
    std::vector<uint8_t> s{mode};
    auto add = [&](std::vector<uint8_t> v) { s.insert(s.end(), v.begin(), v.end()); };
    add(request(0, kCmdRead, 0, 4096, ext));
    add(request(ext ? kCmdFlagPayloadLen : 0, kCmdWrite, 4096, 512, ext));
    s.insert(s.end(), 512, 0xab);
    add(request(kCmdFlagFua, kCmdWriteZeroes, 0, 65536, ext));
    add(request(0, kCmdTrim, 0, 4096, ext));
    add(request(0, kCmdFlush, 0, 0, ext));
    add(request(0, kCmdCache, 0, 4096, ext));
    add(request(kCmdFlagReqOne, kCmdBlockStatus, 0, 1 << 20, ext));
    add(request(0, kCmdRead, 0, 1 << 20, ext));
    add(request(kCmdFlagDf, kCmdRead, 4096, 70000, ext));
    add(request(0, 99, 0, 0, ext));
    add(request(0, kCmdDisc, 0, 0, ext));
    out.push_back(s);
  }
  std::vector<uint8_t> raw{0};
  auto prefix = session_prefix(false);
  raw.insert(raw.end(), prefix.begin(), prefix.begin() + 40);
  out.push_back(raw);
  for (uint8_t m = 3; m < 7; m++) out.push_back({m, 0, 0, 0, 4, 'a', 'b', 'c', 'd', 0, 1, 0, 3});
  return out;
}

TEST(NbdFuzzReplay, SeedsAndMutations) {
  std::mt19937 rng(20261122);
  auto corpus = seeds();
  // The seed sessions get through the handshake to every command: the DF
  // read alone returns 70000 bytes (the 1 MiB reads of zeroes are holes).
  EXPECT_GT(run_one(corpus[0].data(), corpus[0].size()), 70000u);
  EXPECT_GT(run_one(corpus[1].data(), corpus[1].size()), 70000u);
  for (const auto& s : corpus) (void)run_one(s.data(), s.size());
  for (int round = 0; round < 150; round++) {
    std::vector<uint8_t> input = corpus[rng() % corpus.size()];
    int edits = 1 + static_cast<int>(rng() % 8);
    for (int e = 0; e < edits && input.size() > 1; e++) {
      size_t at = 1 + rng() % (input.size() - 1);
      switch (rng() % 4) {
        case 0:
          input[at] = static_cast<uint8_t>(rng());
          break;
        case 1:
          input[at] ^= static_cast<uint8_t>(1u << (rng() % 8));
          break;
        case 2:
          input.resize(at);
          break;
        case 3:
          input.insert(input.begin() + static_cast<long>(at), rng() % 16,
                       static_cast<uint8_t>(rng()));
          break;
      }
    }
    (void)run_one(input.data(), input.size());
  }
  SUCCEED();
}

}  // namespace
}  // namespace strata::nbd::fuzz
