// qcow2 creation options for the qcow2 features beyond the basic layout:
// zstd compression, extended L2 entries, an external data file.
#include "block/core/options.h"
#include "block/drivers/qcow2/create.h"

namespace strata::qcow2 {

namespace {

Result<bool> bool_option(const std::map<std::string, std::string>& opts, const char* key,
                         bool def) {
  auto it = opts.find(key);
  if (it == opts.end()) return def;
  bool v = false;
  if (!parse_bool_word(it->second, &v)) {
    return Error{EINVAL, std::string("Parameter '") + key + "' expects 'on' or 'off'"};
  }
  return v;
}

}  // namespace

Result<void> parse_feature_options(const std::map<std::string, std::string>& opts,
                                   CreateOptions* o) {
  if (auto it = opts.find("compression_type"); it != opts.end()) {
    if (it->second == "zlib") {
      o->compression_type = 0;
    } else if (it->second == "zstd") {
      o->compression_type = 1;
    } else {
      return Error{EINVAL,
                   "Parameter 'compression-type' does not accept value '" + it->second + "'"};
    }
  }
  STRATA_TRY_ASSIGN(o->extended_l2, bool_option(opts, "extended_l2", false));
  STRATA_TRY_ASSIGN(o->data_file_raw, bool_option(opts, "data_file_raw", false));
  if (auto it = opts.find("data_file"); it != opts.end()) o->data_file = it->second;
  return {};
}

}  // namespace strata::qcow2
