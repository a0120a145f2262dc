#pragma once

/// @file result.hpp
/// `Result<T>`: a value or an `Error`. The core never throws; asynchronous operations complete
/// with a `Result`, synchronous setup calls return one.

#include <cstdlib>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <variant>

#include "terminals/export.hpp"

namespace terminals {

/// The expected failures callers branch on. Everything unexpected is `Internal`.
enum class Errc {
  InvalidArgument = 1,  ///< the caller passed something malformed (fix the input)
  NotFound,             ///< the named thing does not exist
  AlreadyExists,        ///< a create collided with an existing thing
  PolicyDenied,         ///< a policy, cap or credential refused the operation
  LimitExceeded,        ///< a size, count or rate limit was hit
  BackendUnavailable,   ///< the engine (Docker, Kubernetes, local) could not be reached
  Timeout,              ///< the operation did not finish in time
  Cancelled,            ///< the operation was cancelled, usually by teardown
  Eof,                  ///< the peer closed the stream
  UpstreamProtocol,     ///< the peer spoke malformed or unexpected protocol
  Io,                   ///< an operating-system I/O error (see `Error::native`)
  Internal,             ///< a bug or an unexpected state
};

/// Where `Error::native` comes from.
enum class ErrorSource { None, Uv, Curl, Llhttp, Http, System };

/// The name of an `Errc`, e.g. "Timeout".
TERMINALS_API const char* errc_name(Errc code) noexcept;

/// A failure: the code callers branch on, a human-readable message that says what failed and,
/// where it helps, how to fix it, and the original code from the layer that failed.
struct TERMINALS_API Error {
  Errc code = Errc::Internal;
  std::string message;
  ErrorSource source = ErrorSource::None;
  int native = 0;

  Error() = default;
  Error(Errc c, std::string msg, ErrorSource src = ErrorSource::None, int nat = 0)
      : code(c), message(std::move(msg)), source(src), native(nat) {}

  /// "Timeout: connect to 127.0.0.1:80 timed out after 5000 ms".
  std::string to_string() const;
};

/// `std::error_category` for `Errc`, so `std::error_code` interop comes free.
TERMINALS_API const std::error_category& errc_category() noexcept;
inline std::error_code make_error_code(Errc e) noexcept {
  return {static_cast<int>(e), errc_category()};
}

/// Terminates the process with a message. Used for broken invariants only, never for input.
[[noreturn]] TERMINALS_API void fatal(const char* what) noexcept;

/// A value of type T or an Error. Shaped like `std::expected`.
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit on purpose
  Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}  // NOLINT

  bool has_value() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  T& value() & { check(); return std::get<0>(v_); }
  const T& value() const& { check(); return std::get<0>(v_); }
  T&& value() && { check(); return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const Error& error() const& {
    if (has_value()) fatal("Result::error() called on a value");
    return std::get<1>(v_);
  }
  Error&& error() && {
    if (has_value()) fatal("Result::error() called on a value");
    return std::get<1>(std::move(v_));
  }

  template <class U>
  T value_or(U&& fallback) const& {
    return has_value() ? std::get<0>(v_) : static_cast<T>(std::forward<U>(fallback));
  }

 private:
  void check() const {
    if (!has_value()) fatal("Result::value() called on an error");
  }
  std::variant<T, Error> v_;
};

/// Success or an Error.
template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT

  bool has_value() const noexcept { return ok_; }
  explicit operator bool() const noexcept { return ok_; }
  void value() const {
    if (!ok_) fatal("Result<void>::value() called on an error");
  }
  const Error& error() const& {
    if (ok_) fatal("Result::error() called on a value");
    return error_;
  }
  Error&& error() && {
    if (ok_) fatal("Result::error() called on a value");
    return std::move(error_);
  }

 private:
  Error error_;
  bool ok_ = true;
};

using Status = Result<void>;

}  // namespace terminals

namespace std {
template <>
struct is_error_code_enum<terminals::Errc> : true_type {};
}  // namespace std
