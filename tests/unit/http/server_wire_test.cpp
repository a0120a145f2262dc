#include <doctest/doctest.h>

#include "http/server_wire.hpp"

using namespace terminals;
using namespace terminals::detail;

TEST_SUITE("unit") {

TEST_CASE("server wire: status lines / headers / chunk sizes") {
  std::string out;
  append_status_line(out, 200, {});
  append_status_line(out, 404, "Nope");
  append_status_line(out, 299, {});
  append_status_line(out, 42, {});                // invalid codes become 500
  append_status_line(out, 200, "split\r\nX: y");  // unsafe reasons are replaced
  CHECK(out ==
        "HTTP/1.1 200 OK\r\nHTTP/1.1 404 Nope\r\nHTTP/1.1 299 Unknown\r\n"
        "HTTP/1.1 500 Internal Server Error\r\nHTTP/1.1 200 OK\r\n");
  out.clear();
  append_header(out, "Content-Type", "text/plain");
  append_chunk_size(out, 500);
  append_chunk_size(out, 0);
  append_decimal(out, 18446744073709551615ull);
  CHECK(out == "Content-Type: text/plain\r\n1f4\r\n0\r\n18446744073709551615");
}

TEST_CASE("server wire: framing headers / unsafe headers / content-length parsing") {
  CHECK(is_framing_header("Connection"));
  CHECK(is_framing_header("keep-alive"));
  CHECK(is_framing_header("CONTENT-LENGTH"));
  CHECK(is_framing_header("Transfer-Encoding"));
  CHECK(is_framing_header("Proxy-Connection"));
  CHECK_FALSE(is_framing_header("Content-Type"));
  CHECK_FALSE(is_framing_header("Upgrade"));
  CHECK(is_safe_header("X-A", "b c"));
  CHECK_FALSE(is_safe_header("X-A", "b\r\nInjected: 1"));
  CHECK_FALSE(is_safe_header("X\nA", "b"));
  CHECK_FALSE(is_safe_header("X:A", "b"));
  CHECK_FALSE(is_safe_header("", "b"));
  CHECK(parse_content_length("42") == 42u);
  CHECK(parse_content_length(" 7 ") == 7u);
  CHECK_FALSE(parse_content_length(""));
  CHECK_FALSE(parse_content_length("-1"));
  CHECK_FALSE(parse_content_length("1,2"));
  CHECK_FALSE(parse_content_length("99999999999999999999999"));
}

TEST_CASE("server wire: JSON error bodies are escaped and complete") {
  CHECK(json_detail("a \"b\" \\ c\n\x01") == "{\"detail\": \"a \\\"b\\\" \\\\ c\\n\\u0001\"}");
  std::string out;
  append_error_response(out, 431, "too big");
  const std::string body = "{\"detail\": \"too big\"}";
  CHECK(out == "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: application/json\r\n"
               "Content-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body);
}

}  // TEST_SUITE
