#pragma once

/// @file http.hpp
/// HTTP/1.1 message heads and headers shared by `Server` and `HttpClient`.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "terminals/export.hpp"
#include "terminals/function.hpp"
#include "terminals/result.hpp"

namespace terminals {

struct Header {
  std::string name;
  std::string value;
};

/// An ordered header list; names compare case-insensitively and keep their spelling.
class TERMINALS_API Headers {
 public:
  Headers() = default;
  Headers(std::initializer_list<Header> list) : list_(list) {}

  void add(std::string name, std::string value);
  /// Replaces every header called `name` with one.
  void set(std::string name, std::string value);
  /// Removes every header called `name`; returns how many.
  std::size_t remove(std::string_view name);
  /// The first value of `name`, if any.
  std::optional<std::string_view> get(std::string_view name) const;
  bool has(std::string_view name) const { return get(name).has_value(); }
  /// Whether a comma-separated header (e.g. `Connection`) lists `token`, case-insensitively.
  bool has_token(std::string_view name, std::string_view token) const;
  /// How many headers are called `name`.
  std::size_t count(std::string_view name) const;

  std::size_t size() const noexcept { return list_.size(); }
  bool empty() const noexcept { return list_.empty(); }
  auto begin() const noexcept { return list_.begin(); }
  auto end() const noexcept { return list_.end(); }
  void clear() noexcept { list_.clear(); }

 private:
  std::vector<Header> list_;
};

/// Case-insensitive ASCII comparison, as header names need.
TERMINALS_API bool iequals(std::string_view a, std::string_view b) noexcept;

/// What the server parsed, or what the client will send.
struct TERMINALS_API RequestHead {
  std::string method = "GET";
  std::string target = "/";  ///< origin-form: path and query, as received
  int http_minor = 1;        ///< HTTP/1.x
  Headers headers;

  // Framing, filled in by the server's parser (a client derives framing from `headers`).
  std::optional<std::uint64_t> content_length;
  bool chunked = false;
  bool keep_alive = true;
  bool upgrade = false;          ///< `Connection: upgrade` with an `Upgrade` header
  bool expect_continue = false;  ///< `Expect: 100-continue`

  /// The target's path (before '?').
  std::string_view path() const noexcept;
  /// The target's query (after '?', without it), empty if none.
  std::string_view query() const noexcept;
};

struct TERMINALS_API ResponseHead {
  int status = 200;
  std::string reason;  ///< empty: the standard reason phrase for `status`
  int http_minor = 1;
  Headers headers;

  // Framing, filled in by the client's parser.
  std::optional<std::uint64_t> content_length;
  bool chunked = false;
  bool keep_alive = true;
  bool upgrade = false;
};

/// "OK", "Not Found", ... ("Unknown" for codes without a standard phrase).
TERMINALS_API const char* status_reason(int status) noexcept;

/// Receives a streamed body. `on_data` runs per chunk (the view is valid only during the call);
/// `on_end` runs exactly once: success after the last byte, or the error that cut it short.
struct BodyHandlers {
  MoveOnlyFunction<void(std::string_view)> on_data;
  Callback<void> on_end;
};

}  // namespace terminals
