// getopt over a strata-io command's words. argv[0] is the command name, as
// qemu-io passes it, so getopt's own messages read as qemu-io's
// ("read: invalid option -- 'x'"). GNU getopt permutes the words: word()
// reads them in their order after parsing.
// Thread rules: getopt's state is global; parse a command to the end before
// anything else may parse (commands parse before their first co_await).
#pragma once

#include <getopt.h>

#include <string>
#include <vector>

namespace strata::io {

class Getopt {
 public:
  explicit Getopt(const std::vector<std::string>& argv) : words_(argv) {
    for (auto& w : words_) ptrs_.push_back(w.data());
    ptrs_.push_back(nullptr);
    optind = 0;  // full reinitialisation of glibc's getopt
    opterr = 1;
  }
  // The next option character, -1 at the end, '?' for an unknown one.
  int next(const char* optstring) { return getopt(argc(), ptrs_.data(), optstring); }
  std::string arg() const { return optarg ? optarg : ""; }
  // The first word that is not an option (after next() returned -1).
  int index() const { return optind; }
  int argc() const { return int(ptrs_.size()) - 1; }
  std::string word(int i) const { return ptrs_[i]; }

 private:
  std::vector<std::string> words_;
  std::vector<char*> ptrs_;
};

}  // namespace strata::io
