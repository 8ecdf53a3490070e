// Runs a libFuzzer-style target (LLVMFuzzerTestOneInput) without libFuzzer:
// every file of the corpus directories given on the command line, then a
// bounded number of inputs mutated from them with a fixed seed. This keeps
// each fuzz target exercised in every test run; coverage-guided fuzzing is
// done by building the same target with clang -fsanitize=fuzzer.
//
//   <target>_replay [--iterations N] CORPUS_DIR...
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

std::vector<std::vector<uint8_t>> load_corpus(int argc, char** argv, int first) {
  std::vector<std::vector<uint8_t>> corpus;
  for (int i = first; i < argc; i++) {
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(argv[i], ec)) {
      std::ifstream f(entry.path(), std::ios::binary);
      corpus.emplace_back(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    }
  }
  if (corpus.empty()) corpus.emplace_back();
  return corpus;
}

// Flips, inserts, deletes and splices bytes, as a fuzzer's mutations would.
std::vector<uint8_t> mutate(const std::vector<uint8_t>& in, const std::vector<uint8_t>& other,
                            std::mt19937_64& rng) {
  std::vector<uint8_t> out = in;
  int edits = 1 + static_cast<int>(rng() % 8);
  for (int e = 0; e < edits; e++) {
    switch (rng() % 5) {
      case 0:
        if (!out.empty()) out[rng() % out.size()] ^= static_cast<uint8_t>(1u << (rng() % 8));
        break;
      case 1:
        out.insert(out.begin() + static_cast<long>(out.empty() ? 0 : rng() % out.size()),
                   static_cast<uint8_t>(rng()));
        break;
      case 2:
        if (!out.empty()) out.erase(out.begin() + static_cast<long>(rng() % out.size()));
        break;
      case 3:
        if (!out.empty()) out[rng() % out.size()] = static_cast<uint8_t>(rng());
        break;
      case 4:
        if (!other.empty()) {
          size_t from = rng() % other.size();
          size_t len = 1 + rng() % (other.size() - from);
          out.insert(out.end(), other.begin() + static_cast<long>(from),
                     other.begin() + static_cast<long>(from + len));
        }
        break;
    }
  }
  return out;
}

// For inputs that are JSON: replace, drop or add one member somewhere in
// the tree, so most mutants stay well-formed and reach the code behind the
// parser.
nlohmann::json random_value(std::mt19937_64& rng) {
  static const char* kStrings[] = {"", "file", "raw", "null-co", "qcow2", "fault", "on", "off",
                                   "unmap", "#block0", "a", "node-name", "read", "EIO"};
  static const int64_t kInts[] = {0, -1, 1, 512, 4096, 65536, 1ll << 31, INT64_MAX, INT64_MIN};
  switch (rng() % 7) {
    case 0: return kStrings[rng() % (sizeof(kStrings) / sizeof(*kStrings))];
    case 1: return kInts[rng() % (sizeof(kInts) / sizeof(*kInts))];
    case 2: return rng() % 2 == 0;
    case 3: return nullptr;
    case 4: return nlohmann::json::object();
    case 5: return nlohmann::json::array({kInts[rng() % 9]});
    default: return static_cast<double>(rng() % 1000) / 7.0;
  }
}

void mutate_json(nlohmann::json& j, std::mt19937_64& rng, int depth = 0) {
  if ((j.is_object() || j.is_array()) && !j.empty() && depth < 8 && rng() % 3 != 0) {
    auto it = j.begin();
    std::advance(it, static_cast<long>(rng() % j.size()));
    mutate_json(*it, rng, depth + 1);
    return;
  }
  if (j.is_object() && rng() % 3 == 0) {
    static const char* kKeys[] = {"driver", "node-name", "file", "size", "offset", "rules",
                                  "read-only", "cache", "backing", "arguments", "execute"};
    j[kKeys[rng() % (sizeof(kKeys) / sizeof(*kKeys))]] = random_value(rng);
    return;
  }
  j = random_value(rng);
}

}  // namespace

int main(int argc, char** argv) {
  int first = 1;
  long iterations = 2000;
  if (argc > 2 && std::strcmp(argv[1], "--iterations") == 0) {
    iterations = std::strtol(argv[2], nullptr, 10);
    first = 3;
  }
  auto corpus = load_corpus(argc, argv, first);
  for (const auto& input : corpus) LLVMFuzzerTestOneInput(input.data(), input.size());
  std::mt19937_64 rng(20261121);
  for (long i = 0; i < iterations; i++) {
    const auto& base = corpus[rng() % corpus.size()];
    const auto& other = corpus[rng() % corpus.size()];
    std::vector<uint8_t> input;
    auto tree = nlohmann::json::parse(base.begin(), base.end(), nullptr, false);
    if (!tree.is_discarded() && rng() % 4 != 0) {
      mutate_json(tree, rng);
      std::string text = tree.dump();
      input.assign(text.begin(), text.end());
    } else {
      input = mutate(base, other, rng);
    }
    LLVMFuzzerTestOneInput(input.data(), input.size());
  }
  std::printf("%zu passed, 0 failed\n", corpus.size() + static_cast<size_t>(iterations));
  return 0;
}
