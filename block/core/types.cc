#include "block/core/types.h"

namespace strata {

const char* preallocation_name(Preallocation p) {
  switch (p) {
    case Preallocation::kOff: return "off";
    case Preallocation::kMetadata: return "metadata";
    case Preallocation::kFalloc: return "falloc";
    case Preallocation::kFull: return "full";
  }
  return "off";
}

bool parse_preallocation(const std::string& s, Preallocation* out) {
  if (s == "off") *out = Preallocation::kOff;
  else if (s == "metadata") *out = Preallocation::kMetadata;
  else if (s == "falloc") *out = Preallocation::kFalloc;
  else if (s == "full") *out = Preallocation::kFull;
  else return false;
  return true;
}

}  // namespace strata
