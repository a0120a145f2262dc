#pragma once

// Drives HttpParser as ServerConnection and HttpClient do (execute, resume after each message,
// stop at an upgrade or an error) and records what it reports, so that a target can compare two
// runs over the same bytes cut differently, and check what every head and body must satisfy.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_check.hpp"
#include "http/parser.hpp"

namespace fuzz {

using terminals::detail::HttpParser;

inline bool is_tchar(unsigned char c) {
  if ((c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
}

/// Records parse events as text; checks the per-message invariants as they come.
class Recorder : public HttpParser::Listener {
 public:
  explicit Recorder(HttpParser::Limits limits, bool response_without_body = false)
      : limits_(limits), no_body_(response_without_body) {}

  std::string log;  // one line per event; body bytes are counted, not copied
  std::vector<terminals::RequestHead> requests;
  std::vector<terminals::ResponseHead> responses;
  std::string body;  // the current message's body
  std::vector<std::string> bodies;  // completed messages' bodies

  void on_request_head(terminals::RequestHead&& h) override {
    FUZZ_CHECK(!in_message_, "a second head before the first message completed");
    FUZZ_CHECK(!h.method.empty(), "empty method");
    check_headers(h.headers, h.target.size());
    FUZZ_CHECK(!(h.content_length && h.chunked), "both Content-Length and chunked accepted");
    begin(h.content_length);
    log += "REQ " + h.method + " " + printable(h.target) + " 1." + std::to_string(h.http_minor) +
           headers_text(h.headers) + flags(h.content_length, h.chunked, h.keep_alive, h.upgrade) +
           (h.expect_continue ? " expect" : "") + "\n";
    requests.push_back(std::move(h));
  }

  bool on_response_head(terminals::ResponseHead&& h) override {
    FUZZ_CHECK(!in_message_, "a second head before the first message completed");
    FUZZ_CHECK(h.status >= 100 && h.status <= 999, "status %d", h.status);
    FUZZ_CHECK(h.status >= 200 || h.status == 101, "interim status %d reached the listener", h.status);
    check_headers(h.headers, h.reason.size());
    FUZZ_CHECK(!(h.content_length && h.chunked), "both Content-Length and chunked accepted");
    const bool bodiless = no_body_ || h.status == 204 || h.status == 304 || h.status == 101;
    begin(bodiless ? std::optional<std::uint64_t>(0) : h.content_length);
    log += "RESP " + std::to_string(h.status) + " " + printable(h.reason) + " 1." +
           std::to_string(h.http_minor) + headers_text(h.headers) +
           flags(h.content_length, h.chunked, h.keep_alive, h.upgrade) + "\n";
    responses.push_back(std::move(h));
    return no_body_;
  }

  void on_body(std::string_view data) override {
    FUZZ_CHECK(in_message_, "body bytes outside a message");
    FUZZ_CHECK(!data.empty(), "an empty body callback");
    body.append(data);
    if (expected_length_) {
      FUZZ_CHECK(body.size() <= *expected_length_, "body of %zu bytes beyond Content-Length %llu",
                 body.size(), static_cast<unsigned long long>(*expected_length_));
    }
  }

  void on_message_complete() override {
    FUZZ_CHECK(in_message_, "a message completed that never started");
    if (expected_length_) {
      FUZZ_CHECK(body.size() == *expected_length_, "message complete after %zu of %llu body bytes",
                 body.size(), static_cast<unsigned long long>(*expected_length_));
    }
    log += "BODY " + std::to_string(body.size()) + " " + std::to_string(std::hash<std::string>()(body)) + "\nEND\n";
    bodies.push_back(std::exchange(body, {}));
    in_message_ = false;
  }

 private:
  void begin(std::optional<std::uint64_t> expected) {
    in_message_ = true;
    expected_length_ = expected;
    body.clear();
  }

  void check_headers(const terminals::Headers& headers, std::size_t line_bytes) {
    FUZZ_CHECK(headers.size() <= limits_.max_headers, "%zu headers over the limit of %zu",
               headers.size(), limits_.max_headers);
    std::size_t bytes = line_bytes;
    for (const auto& hd : headers) {
      FUZZ_CHECK(!hd.name.empty(), "an empty header name");
      for (unsigned char c : hd.name) FUZZ_CHECK(is_tchar(c), "header name '%s'", printable(hd.name).c_str());
      for (unsigned char c : hd.value) {
        FUZZ_CHECK(c != '\r' && c != '\n' && c != '\0', "CR, LF or NUL in header value '%s'",
                   printable(hd.value).c_str());
      }
      bytes += hd.name.size() + hd.value.size();
    }
    FUZZ_CHECK(bytes <= limits_.max_header_bytes, "head of %zu bytes over the limit", bytes);
  }

  static std::string headers_text(const terminals::Headers& headers) {
    std::string out;
    for (const auto& hd : headers) out += " [" + printable(hd.name) + ": " + printable(hd.value) + "]";
    return out;
  }
  static std::string flags(std::optional<std::uint64_t> cl, bool chunked, bool ka, bool up) {
    std::string out;
    if (cl) out += " cl=" + std::to_string(*cl);
    if (chunked) out += " chunked";
    if (ka) out += " keep-alive";
    if (up) out += " upgrade";
    return out;
  }

  HttpParser::Limits limits_;
  bool no_body_;
  bool in_message_ = false;
  std::optional<std::uint64_t> expected_length_;
};

struct RunResult {
  std::string log;
  bool error = false;
  int http_status = 0;
  std::size_t error_offset = 0;  // absolute, in the whole stream
  bool upgrade = false;
  std::size_t upgrade_offset = 0;
  bool finish_ok = true;  // finish() at the end (responses: EOF ends a body)
  std::vector<std::string> bodies;
  std::vector<terminals::RequestHead> requests;
  std::vector<terminals::ResponseHead> responses;
};

/// Feeds `stream` cut at `cuts` (ascending offsets) to a fresh parser.
inline RunResult run_parser(HttpParser::Kind kind, std::string_view stream,
                            const std::vector<std::size_t>& cuts, bool response_without_body = false,
                            HttpParser::Limits limits = {}) {
  Recorder rec(limits, response_without_body);
  HttpParser parser(kind, limits, rec);
  RunResult r;
  std::size_t base = 0;
  std::vector<std::size_t> ends = cuts;
  ends.push_back(stream.size());
  for (std::size_t end : ends) {
    if (end < base) continue;
    std::string piece(stream.substr(base, end - base));  // own copy: ASan sees reads past it
    std::string_view in = piece;
    std::size_t at = base;
    int guard = 0;
    while (!in.empty()) {
      FUZZ_CHECK(++guard < 100000, "the parser makes no progress");
      const HttpParser::Outcome out = parser.execute(in);
      FUZZ_CHECK(out.consumed <= in.size(), "consumed %zu of %zu bytes", out.consumed, in.size());
      switch (out.state) {
        case HttpParser::State::Ok:
          FUZZ_CHECK(out.consumed == in.size(), "Ok after %zu of %zu bytes", out.consumed, in.size());
          in = {};
          break;
        case HttpParser::State::Paused:
          rec.log += "PAUSE\n";
          FUZZ_CHECK(!parser.in_message(), "paused inside a message");
          at += out.consumed;
          in.remove_prefix(out.consumed);
          parser.resume();
          break;
        case HttpParser::State::Upgrade:
          r.upgrade = true;
          r.upgrade_offset = at + out.consumed;
          r.log += rec.log;
          r.bodies = std::move(rec.bodies);
          r.requests = std::move(rec.requests);
          r.responses = std::move(rec.responses);
          return r;
        case HttpParser::State::Error:
          FUZZ_CHECK(out.http_status == 400 || out.http_status == 431, "error status %d", out.http_status);
          FUZZ_CHECK(!out.error.message.empty(), "an error without a message");
          r.error = true;
          r.http_status = out.http_status;
          r.error_offset = at + out.consumed;
          r.log += rec.log;
          r.bodies = std::move(rec.bodies);
          r.requests = std::move(rec.requests);
          r.responses = std::move(rec.responses);
          return r;
      }
    }
    base = end;
  }
  r.finish_ok = static_cast<bool>(parser.finish());
  r.log += rec.log;
  r.bodies = std::move(rec.bodies);
  r.requests = std::move(rec.requests);
  r.responses = std::move(rec.responses);
  return r;
}

/// Cut points derived from the bytes themselves, so that a seed stays a plain HTTP message.
inline std::vector<std::size_t> cuts_for(std::string_view data) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : data) h = (h ^ c) * 1099511628211ull;
  std::vector<std::size_t> cuts;
  std::size_t pos = 0;
  while (data.size() > 1) {
    h = h * 6364136223846793005ull + 1442695040888963407ull;
    const std::size_t step = 1 + (h >> 33) % (h & 1 ? 3 : 64);  // many tiny pieces or a few
    pos += step;
    if (pos >= data.size()) break;
    cuts.push_back(pos);
  }
  return cuts;
}

}  // namespace fuzz
