// The server's request parser (HttpParser over llhttp, http/parser.cpp) on arbitrary bytes:
// pipelined requests, bodies, upgrades, limits. Checked beyond "no crash":
//  - consumed never exceeds what was given, Ok means everything was consumed;
//  - every head obeys the limits and the header rules (tchar names, no CR/LF/NUL in values,
//    never both Content-Length and chunked), a body never runs past its Content-Length;
//  - the same bytes cut into other pieces give the same requests, bodies and outcome;
//  - a parsed head written out again parses to the same head;
//  - the target's path and query decode without surprises (url.hpp).

#include <cstdint>
#include <string>

#include "http/url.hpp"
#include "http_harness.hpp"

namespace {

using terminals::detail::HttpParser;

std::string serialize(const terminals::RequestHead& h) {
  std::string out = h.method + " " + h.target + " HTTP/1." + std::to_string(h.http_minor) + "\r\n";
  for (const auto& hd : h.headers) out += hd.name + ": " + hd.value + "\r\n";
  out += "\r\n";
  return out;
}

void check_target(const terminals::RequestHead& h) {
  using namespace terminals::detail;
  const std::string_view path = h.path();
  const std::string_view query = h.query();
  FUZZ_CHECK(path.size() + query.size() <= h.target.size(), "path and query longer than the target");
  if (auto decoded = percent_decode(path)) {
    // Encoding what was decoded and decoding again gives it back.
    auto again = percent_decode(percent_encode(*decoded, /*keep_slash=*/true));
    FUZZ_CHECK(again && *again == *decoded, "percent-encoding round trip of '%s'", fuzz::printable(*decoded).c_str());
  }
  if (auto q = Query::parse(query)) {
    q->drop_null_values();
    for (const auto& [k, v] : q->items()) {
      FUZZ_CHECK(q->get(k).has_value(), "query key '%s' not found", fuzz::printable(k).c_str());
      (void)v;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes = fuzz::as_view(data, size);
  const auto whole = fuzz::run_parser(HttpParser::Kind::Request, bytes, {});
  const auto cut = fuzz::run_parser(HttpParser::Kind::Request, bytes, fuzz::cuts_for(bytes));

  FUZZ_CHECK(whole.log == cut.log, "events differ with the input cut in pieces:\n--- whole\n%s--- cut\n%s",
             whole.log.c_str(), cut.log.c_str());
  FUZZ_CHECK(whole.error == cut.error && whole.http_status == cut.http_status,
             "outcome differs with the input cut in pieces: %d/%d vs %d/%d", whole.error,
             whole.http_status, cut.error, cut.http_status);
  if (whole.error && whole.http_status == 400) {
    FUZZ_CHECK(whole.error_offset == cut.error_offset, "error at %zu whole, %zu cut", whole.error_offset,
               cut.error_offset);
  }
  FUZZ_CHECK(whole.upgrade == cut.upgrade && whole.upgrade_offset == cut.upgrade_offset,
             "upgrade differs with the input cut in pieces");
  if (whole.error) FUZZ_CHECK(whole.error_offset <= size, "error offset past the input");
  if (whole.upgrade) FUZZ_CHECK(whole.upgrade_offset <= size, "upgrade offset past the input");

  for (const auto& h : whole.requests) {
    check_target(h);
    const std::string again = serialize(h);
    const auto re = fuzz::run_parser(HttpParser::Kind::Request, again, {});
    FUZZ_CHECK(!re.error && re.requests.size() == 1, "the head written out again does not parse:\n%s\n%s",
               fuzz::printable(again).c_str(), re.log.c_str());
    const auto& r = re.requests[0];
    bool same = r.method == h.method && r.target == h.target && r.http_minor == h.http_minor &&
                r.headers.size() == h.headers.size() && r.content_length == h.content_length &&
                r.chunked == h.chunked && r.upgrade == h.upgrade;
    for (auto a = r.headers.begin(), b = h.headers.begin(); same && a != r.headers.end(); ++a, ++b) {
      same = a->name == b->name && a->value == b->value;
    }
    FUZZ_CHECK(same, "the head written out again parses differently:\n%s\n%s", fuzz::printable(again).c_str(),
               re.log.c_str());
  }
  return 0;
}
