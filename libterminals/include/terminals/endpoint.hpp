#pragma once

/// @file endpoint.hpp
/// `Endpoint`: where to listen or connect: a TCP host and port or a unix socket path.

#include <cstdint>
#include <string>
#include <string_view>

#include "terminals/export.hpp"
#include "terminals/result.hpp"

namespace terminals {

struct TERMINALS_API Endpoint {
  enum class Kind { Tcp, Unix };
  Kind kind = Kind::Tcp;
  std::string host = "127.0.0.1";  ///< TCP: an IPv4 or IPv6 literal, or "localhost"
  std::uint16_t port = 0;          ///< TCP: 0 when listening picks a free port
  std::string path;                ///< Unix: the socket's path

  static Endpoint tcp(std::string host, std::uint16_t port);
  static Endpoint unix_socket(std::string path);

  /// Parses "tcp://HOST:PORT", "HOST:PORT", "[::1]:PORT", "unix:/path" or "unix:///path".
  static Result<Endpoint> parse(std::string_view text);
  /// The inverse of parse(): "tcp://127.0.0.1:8080" or "unix:/run/x.sock".
  std::string to_string() const;

  bool operator==(const Endpoint&) const = default;
};

}  // namespace terminals
