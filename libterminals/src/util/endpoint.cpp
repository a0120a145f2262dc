#include "terminals/endpoint.hpp"

#include <charconv>

namespace terminals {

Endpoint Endpoint::tcp(std::string host, std::uint16_t port) {
  Endpoint e;
  e.kind = Kind::Tcp;
  e.host = std::move(host);
  e.port = port;
  return e;
}

Endpoint Endpoint::unix_socket(std::string path) {
  Endpoint e;
  e.kind = Kind::Unix;
  e.host.clear();
  e.path = std::move(path);
  return e;
}

Result<Endpoint> Endpoint::parse(std::string_view text) {
  auto bad = [&](const char* why) {
    return Error(Errc::InvalidArgument,
                 "endpoint '" + std::string(text) + "': " + why +
                     " (use tcp://HOST:PORT or unix:/path/to.sock)");
  };
  if (text.starts_with("unix:")) {
    std::string_view path = text.substr(5);
    if (path.starts_with("//")) path.remove_prefix(2);
    if (path.empty()) return bad("empty socket path");
    if (path.size() >= 108) return bad("socket path longer than 107 bytes");
    return unix_socket(std::string(path));
  }
  std::string_view rest = text;
  if (rest.starts_with("tcp://")) rest.remove_prefix(6);
  else if (rest.starts_with("http://")) rest.remove_prefix(7);
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  std::string_view host;
  std::string_view port;
  if (rest.starts_with("[")) {
    auto close = rest.find(']');
    if (close == std::string_view::npos) return bad("missing ']' after IPv6 address");
    host = rest.substr(1, close - 1);
    if (close + 1 >= rest.size() || rest[close + 1] != ':') return bad("missing ':PORT'");
    port = rest.substr(close + 2);
  } else {
    auto colon = rest.rfind(':');
    if (colon == std::string_view::npos) return bad("missing ':PORT'");
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
  }
  if (host.empty()) return bad("empty host");
  unsigned value = 0;
  auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (ec != std::errc() || ptr != port.data() + port.size() || value > 65535) {
    return bad("port must be a number from 0 to 65535");
  }
  return tcp(std::string(host), static_cast<std::uint16_t>(value));
}

std::string Endpoint::to_string() const {
  if (kind == Kind::Unix) return "unix:" + path;
  if (host.find(':') != std::string::npos) return "tcp://[" + host + "]:" + std::to_string(port);
  return "tcp://" + host + ":" + std::to_string(port);
}

}  // namespace terminals
