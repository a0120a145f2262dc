// The client's response parser (HttpParser in Response mode, used by HttpClient for every
// upstream answer, including a terminal's agent, which the terminal's user controls). Checked
// beyond "no crash": consumed never exceeds what was given; heads obey the limits and header
// rules; interim 1xx answers never reach the listener; a body never runs past its
// Content-Length (or exists at all for 204/304/HEAD answers); the same bytes cut into other
// pieces give the same events and outcome, EOF (finish) included.

#include <cstdint>
#include <string>

#include "http_harness.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using terminals::detail::HttpParser;
  const std::string_view bytes = fuzz::as_view(data, size);
  // Answers to HEAD have no body whatever their headers say; let the bytes choose.
  const bool head_request = size > 0 && (data[size - 1] & 0x80);
  const auto whole = fuzz::run_parser(HttpParser::Kind::Response, bytes, {}, head_request);
  const auto cut = fuzz::run_parser(HttpParser::Kind::Response, bytes, fuzz::cuts_for(bytes), head_request);

  FUZZ_CHECK(whole.log == cut.log, "events differ with the input cut in pieces:\n--- whole\n%s--- cut\n%s",
             whole.log.c_str(), cut.log.c_str());
  FUZZ_CHECK(whole.error == cut.error && whole.http_status == cut.http_status,
             "outcome differs with the input cut in pieces");
  if (whole.error && whole.http_status == 400) {
    FUZZ_CHECK(whole.error_offset == cut.error_offset, "error at %zu whole, %zu cut", whole.error_offset,
               cut.error_offset);
  }
  FUZZ_CHECK(whole.upgrade == cut.upgrade && whole.upgrade_offset == cut.upgrade_offset,
             "upgrade differs with the input cut in pieces");
  FUZZ_CHECK(whole.finish_ok == cut.finish_ok, "EOF handling differs with the input cut in pieces");
  if (whole.upgrade) {
    FUZZ_CHECK(!whole.responses.empty() && whole.responses.back().status == 101,
               "stopped for an upgrade without a 101");
  }
  return 0;
}
