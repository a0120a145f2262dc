#pragma once

// Percent-decoding and query strings.

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "terminals/result.hpp"

namespace terminals::detail {

/// Decodes %XX escapes (and '+' as space when `plus_as_space`). InvalidArgument on a bad escape.
Result<std::string> percent_decode(std::string_view in, bool plus_as_space = false);
/// Encodes everything but unreserved characters (RFC 3986) and, if `keep_slash`, '/'.
std::string percent_encode(std::string_view in, bool keep_slash = false);

/// A decoded query string. Repeated keys keep every value, in order.
class Query {
 public:
  static Result<Query> parse(std::string_view raw);
  std::optional<std::string_view> get(std::string_view key) const;
  std::vector<std::string_view> get_all(std::string_view key) const;
  bool has(std::string_view key) const { return get(key).has_value(); }
  /// Drops every parameter whose value is the literal "null" (any case), as Open Terminal does
  /// before routing, so `?wait=null` means "no wait".
  void drop_null_values();
  const std::vector<std::pair<std::string, std::string>>& items() const { return items_; }

 private:
  std::vector<std::pair<std::string, std::string>> items_;
};

}  // namespace terminals::detail
