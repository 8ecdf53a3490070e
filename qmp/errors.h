// QMP error classes carried inside strata::Error.
//
// Contract: a handler returns an ordinary Error for GenericError (the class
// of almost every QMP failure). For the few other classes it returns
// class_error(ErrorClass::kX, message), which encodes the class in the
// error code above the errno range; error_class_of() recovers it and maps
// every ordinary errno code to GenericError.
// Thread rules: pure functions.
#pragma once

#include <string>

#include "strata/result.h"

namespace strata::qmp {

enum class ErrorClass {
  kGenericError,
  kCommandNotFound,
  kDeviceNotActive,
  kDeviceNotFound,
  kKVMMissingCap,
};

constexpr int kErrorClassCodeBase = 0x10000;

inline Error class_error(ErrorClass cls, std::string message) {
  return Error{kErrorClassCodeBase + static_cast<int>(cls), std::move(message)};
}

inline ErrorClass error_class_of(const Error& e) {
  int v = e.code - kErrorClassCodeBase;
  if (v > 0 && v <= static_cast<int>(ErrorClass::kKVMMissingCap)) return static_cast<ErrorClass>(v);
  return ErrorClass::kGenericError;
}

inline const char* error_class_name(ErrorClass cls) {
  switch (cls) {
    case ErrorClass::kGenericError:
      return "GenericError";
    case ErrorClass::kCommandNotFound:
      return "CommandNotFound";
    case ErrorClass::kDeviceNotActive:
      return "DeviceNotActive";
    case ErrorClass::kDeviceNotFound:
      return "DeviceNotFound";
    case ErrorClass::kKVMMissingCap:
      return "KVMMissingCap";
  }
  return "GenericError";
}

}  // namespace strata::qmp
