// Subcommands not implemented yet: they say so and fail.
#include "strata_img/common.h"

namespace strata::img {

namespace {
int not_yet(const Args& args) {
  error_report("'" + args[0] + "' is not implemented yet");
  return 1;
}
}  // namespace

int cmd_commit(Engine&, const Args& args) {
  return not_yet(args);
}
int cmd_rebase(Engine&, const Args& args) {
  return not_yet(args);
}
int cmd_amend(Engine&, const Args& args) {
  return not_yet(args);
}
int cmd_measure(Engine&, const Args& args) {
  return not_yet(args);
}

}  // namespace strata::img
