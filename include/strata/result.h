// Result<T>: a value or an Error (errno-style code plus a human message).
//
// Contract: errors are values; nothing in Strata throws across a coroutine
// boundary. A Result is cheap to move; accessing value() of an error Result
// is a programming error and aborts.
// Thread rules: none; a Result is a plain value.
#pragma once

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <variant>

namespace strata {

struct Error {
  int code = EIO;  // positive errno value
  std::string message;
};

inline Error make_error(int code, std::string message) { return Error{code, std::move(message)}; }

[[noreturn]] inline void fatal_bad_access(const Error& e) {
  std::fprintf(stderr, "strata: value() on error result: %s\n", e.message.c_str());
  std::abort();
}

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : state_(std::in_place_index<0>, std::move(value)) {}
  Result(Error error) : state_(std::in_place_index<1>, std::move(error)) {}

  bool ok() const { return state_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & {
    if (!ok()) fatal_bad_access(error());
    return std::get<0>(state_);
  }
  const T& value() const& {
    if (!ok()) fatal_bad_access(error());
    return std::get<0>(state_);
  }
  T&& value() && {
    if (!ok()) fatal_bad_access(error());
    return std::get<0>(std::move(state_));
  }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const& { return std::get<1>(state_); }
  Error&& error() && { return std::get<1>(std::move(state_)); }

 private:
  std::variant<T, Error> state_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), failed_(true) {}

  bool ok() const { return !failed_; }
  explicit operator bool() const { return ok(); }
  const Error& error() const& { return error_; }
  Error&& error() && { return std::move(error_); }

 private:
  Error error_;
  bool failed_ = false;
};

using Status = Result<void>;

}  // namespace strata

// Propagate an error from a Result-returning expression out of a coroutine.
#define STRATA_CO_TRY(expr)                         \
  do {                                              \
    auto&& strata_try_result_ = (expr);             \
    if (!strata_try_result_) co_return std::move(strata_try_result_).error(); \
  } while (0)

#define STRATA_CO_TRY_CONCAT_(a, b) a##b
#define STRATA_CO_TRY_CONCAT(a, b) STRATA_CO_TRY_CONCAT_(a, b)
// Declare `decl` from the value of a Result-returning expression, or return its error.
#define STRATA_CO_TRY_ASSIGN(decl, expr) \
  STRATA_CO_TRY_ASSIGN_IMPL_(STRATA_CO_TRY_CONCAT(strata_try_, __LINE__), decl, expr)
#define STRATA_CO_TRY_ASSIGN_IMPL_(tmp, decl, expr)        \
  auto tmp = (expr);                                       \
  if (!tmp) co_return std::move(tmp).error();              \
  decl = std::move(tmp).value()

// Same as STRATA_CO_TRY for ordinary (non-coroutine) functions.
#define STRATA_TRY(expr)                            \
  do {                                              \
    auto&& strata_try_result_ = (expr);             \
    if (!strata_try_result_) return std::move(strata_try_result_).error(); \
  } while (0)
#define STRATA_TRY_ASSIGN(decl, expr) \
  STRATA_TRY_ASSIGN_IMPL_(STRATA_CO_TRY_CONCAT(strata_try_, __LINE__), decl, expr)
#define STRATA_TRY_ASSIGN_IMPL_(tmp, decl, expr) \
  auto tmp = (expr);                             \
  if (!tmp) return std::move(tmp).error();       \
  decl = std::move(tmp).value()
