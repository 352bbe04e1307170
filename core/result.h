// Result<T>: the return type of everything that reads user input (files, requests, prompts).
// Errors are normal events: the message names the file/tensor/field and gives expected vs actual.
#pragma once

#include <fmt/format.h>

#include <cassert>
#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace sputnik {

struct Error {
  std::string message;
};

// Builds an Error with fmt-style formatting: return make_error("{}: bad magic {:#x}", path, m);
template <typename... Args>
Error make_error(fmt::format_string<Args...> format, Args&&... args) {
  return Error{fmt::format(format, std::forward<Args>(args)...)};
}

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : state_(std::move(value)) {}
  Result(Error error) : state_(std::move(error)) {}

  bool ok() const { return state_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { assert(ok()); return std::get<0>(state_); }
  const T& value() const& { assert(ok()); return std::get<0>(state_); }
  T&& value() && { assert(ok()); return std::get<0>(std::move(state_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const Error& error() const { assert(!ok()); return std::get<1>(state_); }
  const std::string& message() const { return error().message; }

 private:
  std::variant<T, Error> state_;
};

// Result<void>: success carries no value.
struct Ok {};
using Status = Result<Ok>;
inline Status ok_status() { return Ok{}; }

}  // namespace sputnik

// Propagates an error from an expression returning Result<...>; yields nothing.
#define SPUTNIK_CHECK_OK(expr)                            \
  do {                                                    \
    auto sputnik_status_ = (expr);                        \
    if (!sputnik_status_.ok()) return sputnik_status_.error(); \
  } while (0)

// Declares `lhs` from a Result-returning expression, or returns its error.
#define SPUTNIK_CONCAT_INNER(a, b) a##b
#define SPUTNIK_CONCAT(a, b) SPUTNIK_CONCAT_INNER(a, b)
#define SPUTNIK_ASSIGN_OR_RETURN(lhs, expr) \
  SPUTNIK_ASSIGN_OR_RETURN_IMPL(SPUTNIK_CONCAT(sputnik_result_, __LINE__), lhs, expr)
#define SPUTNIK_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return tmp.error();                  \
  lhs = std::move(tmp).value()
