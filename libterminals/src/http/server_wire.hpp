#pragma once

// Byte-level pieces of the server's responses: status lines, header lines, chunk framing and
// the small JSON error answers. Everything appends to a caller-owned string so that a response
// head is built in one buffer (reused across requests) and written with one call.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "terminals/http.hpp"

namespace terminals::detail {

/// "HTTP/1.1 404 Not Found\r\n". An empty or unsafe `reason` is replaced by the standard one.
void append_status_line(std::string& out, int status, std::string_view reason);
/// "Name: value\r\n".
void append_header(std::string& out, std::string_view name, std::string_view value);
void append_decimal(std::string& out, std::uint64_t value);
/// A chunk's size line: "1f4\r\n".
void append_chunk_size(std::string& out, std::size_t size);

/// Headers the server writes itself from the response's framing (`Connection`, `Keep-Alive`,
/// `Transfer-Encoding`, `Content-Length`, `Proxy-Connection`).
bool is_framing_header(std::string_view name) noexcept;
/// False for names or values that would break the message (CR, LF, NUL): such headers are
/// dropped rather than letting a handler split the response.
bool is_safe_header(std::string_view name, std::string_view value) noexcept;
/// A Content-Length value: digits only, no overflow.
std::optional<std::uint64_t> parse_content_length(std::string_view value) noexcept;

/// `{"detail": "..."}` with `detail` escaped for JSON.
std::string json_detail(std::string_view detail);
/// A whole error response with a JSON body and `Connection: close`.
void append_error_response(std::string& out, int status, std::string_view detail);

}  // namespace terminals::detail
