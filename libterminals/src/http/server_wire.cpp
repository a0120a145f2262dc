#include "http/server_wire.hpp"

#include <charconv>
#include <cstring>

namespace terminals::detail {

namespace {
bool has_unsafe_char(std::string_view s) noexcept {
  for (char c : s) {
    if (c == '\r' || c == '\n' || c == '\0') return true;
  }
  return false;
}
}  // namespace

void append_decimal(std::string& out, std::uint64_t value) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof(buf), value);
  out.append(buf, static_cast<std::size_t>(r.ptr - buf));
}

void append_chunk_size(std::string& out, std::size_t size) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof(buf), static_cast<std::uint64_t>(size), 16);
  out.append(buf, static_cast<std::size_t>(r.ptr - buf));
  out.append("\r\n", 2);
}

void append_status_line(std::string& out, int status, std::string_view reason) {
  if (status < 100 || status > 999) status = 500;
  if (reason.empty() || has_unsafe_char(reason)) reason = status_reason(status);
  out.append("HTTP/1.1 ", 9);
  append_decimal(out, static_cast<std::uint64_t>(status));
  out.push_back(' ');
  out.append(reason);
  out.append("\r\n", 2);
}

void append_header(std::string& out, std::string_view name, std::string_view value) {
  out.append(name);
  out.append(": ", 2);
  out.append(value);
  out.append("\r\n", 2);
}

bool is_framing_header(std::string_view name) noexcept {
  // Length first: most headers are rejected without a comparison.
  switch (name.size()) {
    case 10: return iequals(name, "connection") || iequals(name, "keep-alive");
    case 14: return iequals(name, "content-length");
    case 16: return iequals(name, "proxy-connection");
    case 17: return iequals(name, "transfer-encoding");
    default: return false;
  }
}

bool is_safe_header(std::string_view name, std::string_view value) noexcept {
  if (name.empty() || has_unsafe_char(name) || has_unsafe_char(value)) return false;
  return name.find(':') == std::string_view::npos;
}

std::optional<std::uint64_t> parse_content_length(std::string_view value) noexcept {
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  if (value.empty()) return std::nullopt;
  std::uint64_t n = 0;
  auto r = std::from_chars(value.data(), value.data() + value.size(), n);
  if (r.ec != std::errc() || r.ptr != value.data() + value.size()) return std::nullopt;
  return n;
}

std::string json_detail(std::string_view detail) {
  std::string out = "{\"detail\": \"";
  for (char c : detail) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          static const char hex[] = "0123456789abcdef";
          out += "\\u00";
          out.push_back(hex[(c >> 4) & 0xf]);
          out.push_back(hex[c & 0xf]);
        } else {
          out.push_back(c);
        }
    }
  }
  out += "\"}";
  return out;
}

void append_error_response(std::string& out, int status, std::string_view detail) {
  const std::string body = json_detail(detail);
  append_status_line(out, status, {});
  out.append("Content-Type: application/json\r\nContent-Length: ");
  append_decimal(out, body.size());
  out.append("\r\nConnection: close\r\n\r\n");
  out.append(body);
}

}  // namespace terminals::detail
