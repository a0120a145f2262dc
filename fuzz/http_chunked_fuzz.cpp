// Chunked request bodies (llhttp's decoder behind HttpParser, and our chunk framing in
// server_wire.cpp / client_request.cpp). Two checks per input:
//  1. the input as a chunked body after a fixed head: decoded body bytes never exceed the input,
//     the same bytes cut into other pieces decode the same, a completed message is followed by
//     the next pipelined request;
//  2. the input as a body, framed by our own encoders into chunks whose sizes come from the
//     input, with optional chunk extensions and trailers: it decodes to exactly the input.

#include <cstdint>
#include <string>

#include "http/client.hpp"
#include "http/server_wire.hpp"
#include "http_harness.hpp"

namespace {

using terminals::detail::HttpParser;
constexpr std::string_view kHead = "POST /api/files/upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";

void raw_body(std::string_view bytes) {
  const std::string stream = std::string(kHead) + std::string(bytes);
  const auto whole = fuzz::run_parser(HttpParser::Kind::Request, stream, {});
  const auto cut = fuzz::run_parser(HttpParser::Kind::Request, stream, fuzz::cuts_for(stream));
  FUZZ_CHECK(whole.log == cut.log, "events differ with the input cut in pieces:\n--- whole\n%s--- cut\n%s",
             whole.log.c_str(), cut.log.c_str());
  FUZZ_CHECK(whole.error == cut.error, "outcome differs with the input cut in pieces");
  FUZZ_CHECK(!whole.requests.empty(), "the fixed head did not parse");
  std::size_t body_bytes = 0;
  for (const auto& b : whole.bodies) body_bytes += b.size();
  FUZZ_CHECK(body_bytes <= bytes.size(), "%zu body bytes decoded from %zu bytes", body_bytes, bytes.size());
}

void framed_body(std::string_view body) {
  std::uint64_t h = 0x9e3779b97f4a7c15ull ^ body.size();
  for (unsigned char c : body.substr(0, 16)) h = (h ^ c) * 1099511628211ull;
  auto next = [&] { return h = h * 6364136223846793005ull + 1442695040888963407ull, h >> 33; };

  std::string stream(kHead);
  std::size_t pos = 0;
  while (pos < body.size()) {
    const std::size_t n = std::min<std::size_t>(body.size() - pos, 1 + next() % 300);
    if (next() & 1) {
      terminals::detail::append_chunk_size(stream, n);
    } else {
      terminals::detail::append_chunk_header(stream, n);
    }
    if ((next() & 7) == 0) {  // a chunk extension goes before the CRLF
      stream.resize(stream.size() - 2);
      stream += ";ext=\"v\"\r\n";
    }
    stream.append(body.substr(pos, n));
    stream += "\r\n";
    pos += n;
  }
  stream += "0\r\n";
  if (next() & 1) stream += "X-Checksum: abc\r\n";
  stream += "\r\n";
  stream += "GET /next HTTP/1.1\r\nHost: t\r\n\r\n";  // pipelined: framing must end exactly

  const auto r = fuzz::run_parser(HttpParser::Kind::Request, stream, fuzz::cuts_for(body));
  FUZZ_CHECK(!r.error, "our own chunk framing was refused:\n%s", r.log.c_str());
  FUZZ_CHECK(r.bodies.size() == 2 && r.requests.size() == 2, "expected 2 messages:\n%s", r.log.c_str());
  FUZZ_CHECK(r.bodies[0] == body, "decoded %zu bytes, framed %zu", r.bodies[0].size(), body.size());
  FUZZ_CHECK(r.requests[1].target == "/next", "the pipelined request was misread");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes = fuzz::as_view(data, size);
  raw_body(bytes);
  framed_body(bytes);
  return 0;
}
