// Request serialisation for the HTTP client: the head in one string (one write), body framing,
// and the checks that keep a caller's head from smuggling a second request onto the wire.

#include <charconv>

#include "http/client.hpp"

namespace terminals::detail {

namespace {

// RFC 9110 5.6.2 token characters.
bool is_tchar(char c) noexcept {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+': case '-':
    case '.': case '^': case '_': case '`': case '|': case '~':
      return true;
    default:
      return false;
  }
}

bool is_token(std::string_view s) noexcept {
  if (s.empty()) return false;
  for (char c : s) {
    if (!is_tchar(c)) return false;
  }
  return true;
}

// A header value or target may hold anything but line breaks and NUL (which would end the
// header early and let the rest be read as another header or request).
bool has_line_break(std::string_view s) noexcept {
  for (char c : s) {
    if (c == '\r' || c == '\n' || c == '\0') return true;
  }
  return false;
}

bool is_target(std::string_view s) noexcept {
  if (s.empty()) return false;
  for (char c : s) {
    if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) return false;
  }
  return true;
}

Error invalid(std::string what) { return Error(Errc::InvalidArgument, std::move(what)); }

}  // namespace

bool method_without_body(std::string_view method) noexcept {
  return method == "GET" || method == "HEAD" || method == "DELETE" || method == "OPTIONS" ||
         method == "TRACE";
}

void append_chunk_header(std::string& out, std::size_t size) {
  char buf[20];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), size, 16);
  (void)ec;  // 20 bytes hold any 64-bit value in hex
  out.append(buf, static_cast<std::size_t>(end - buf));
  out.append("\r\n", 2);
}

std::string upstream_key(const Endpoint& upstream) {
  if (upstream.kind == Endpoint::Kind::Unix) return "unix:" + upstream.path;
  std::string key = upstream.host;
  key += ':';
  key += std::to_string(upstream.port);
  return key;
}

Result<RequestPlan> serialize_request(const RequestHead& head, const Endpoint& upstream,
                                      std::string& out) {
  if (!is_token(head.method)) return invalid("request method '" + head.method + "' is not a token");
  if (!is_target(head.target)) {
    return invalid("request target must be non-empty without spaces or control characters");
  }

  RequestPlan plan;
  std::size_t size = head.method.size() + head.target.size() + 16;
  bool has_host = false;
  std::size_t content_lengths = 0;
  std::optional<std::string_view> content_length;
  bool has_te = false;
  for (const auto& h : head.headers) {
    if (!is_token(h.name)) return invalid("header name '" + h.name + "' is not a token");
    if (has_line_break(h.value)) {
      return invalid("header " + h.name + " has a line break in its value");
    }
    size += h.name.size() + h.value.size() + 4;
    if (iequals(h.name, "host")) {
      has_host = true;
    } else if (iequals(h.name, "content-length")) {
      ++content_lengths;
      content_length = h.value;
    } else if (iequals(h.name, "transfer-encoding")) {
      has_te = true;
    }
  }
  if (content_lengths > 1) return invalid("request has several Content-Length headers");
  if (content_length && has_te) {
    return invalid("request has both Content-Length and Transfer-Encoding");
  }

  bool add_chunked = false;
  if (has_te) {
    if (!head.headers.has_token("transfer-encoding", "chunked")) {
      return invalid("request Transfer-Encoding must include chunked");
    }
    plan.framing = BodyFraming::Chunked;
  } else if (content_length) {
    std::string_view v = *content_length;
    std::uint64_t n = 0;
    auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (v.empty() || ec != std::errc() || ptr != v.data() + v.size()) {
      return invalid("request Content-Length '" + std::string(v) + "' is not a number");
    }
    plan.framing = n == 0 ? BodyFraming::None : BodyFraming::Length;
    plan.length = n;
  } else if (!method_without_body(head.method)) {
    plan.framing = BodyFraming::Chunked;
    add_chunked = true;
  }
  plan.keep_alive = !head.headers.has_token("connection", "close");
  plan.is_head = head.method == "HEAD";
  plan.idempotent = method_without_body(head.method) || head.method == "PUT";

  std::string host;
  if (!has_host) {
    if (upstream.kind == Endpoint::Kind::Unix) {
      host = "localhost";
    } else {
      const bool v6 = upstream.host.find(':') != std::string::npos;
      host = v6 ? "[" + upstream.host + "]" : upstream.host;
      if (upstream.port != 80) host += ":" + std::to_string(upstream.port);
    }
    size += host.size() + 8;
  }
  if (add_chunked) size += 28;

  out.reserve(out.size() + size);
  out += head.method;
  out += ' ';
  out += head.target;
  out += " HTTP/1.1\r\n";
  if (!has_host) {
    out += "Host: ";
    out += host;
    out += "\r\n";
  }
  for (const auto& h : head.headers) {
    out += h.name;
    out += ": ";
    out += h.value;
    out += "\r\n";
  }
  if (add_chunked) out += "Transfer-Encoding: chunked\r\n";
  out += "\r\n";
  return plan;
}

}  // namespace terminals::detail
