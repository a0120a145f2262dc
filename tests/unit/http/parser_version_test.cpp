// Found by fuzz/http_request_fuzz.cpp and fuzz/http_response_fuzz.cpp: llhttp accepts an
// HTTP/0.9 request line (no version), which reached handlers as "HTTP/1.9", and status codes
// below 100 ("HTTP/1.1 010 X"); a request whose Transfer-Encoding does not end in chunked was
// handed to the listener (as body-less) before llhttp refused it; a 1xx response with a
// Content-Length had its "body" passed on as body bytes.

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "http/parser.hpp"

using namespace terminals;
using terminals::detail::HttpParser;

namespace {

struct Heads : HttpParser::Listener {
  std::vector<RequestHead> requests;
  std::vector<ResponseHead> responses;
  std::string body;
  void on_body(std::string_view d) override { body.append(d); }
  void on_request_head(RequestHead&& h) override { requests.push_back(std::move(h)); }
  bool on_response_head(ResponseHead&& h) override {
    responses.push_back(std::move(h));
    return false;
  }
};

}  // namespace

TEST_SUITE("unit") {

TEST_CASE("http: parser refuses requests that are not HTTP/1.x") {
  for (const char* bad : {"GET /health\r\n\r\n", "GET /health HTTP/2.0\r\nHost: a\r\n\r\n",
                          "GET / HTTP/1.1\r\nHost: a\r\n\r\nHEAD /files/list?directory=x\r\n\r\n"}) {
    CAPTURE(bad);
    Heads heads;
    HttpParser p(HttpParser::Kind::Request, {}, heads);
    std::string_view in = bad;
    HttpParser::Outcome out;
    while (true) {
      out = p.execute(in);
      if (out.state != HttpParser::State::Paused) break;
      in.remove_prefix(out.consumed);
      p.resume();
    }
    CHECK(out.state == HttpParser::State::Error);
    CHECK(out.http_status == 400);
    for (const auto& h : heads.requests) CHECK(h.http_minor <= 1);
  }
  Heads heads;
  HttpParser p(HttpParser::Kind::Request, {}, heads);
  CHECK(p.execute("GET / HTTP/1.0\r\n\r\n").state == HttpParser::State::Paused);
  REQUIRE(heads.requests.size() == 1);
  CHECK(heads.requests[0].http_minor == 0);
}

TEST_CASE("http: parser refuses response status codes below 100") {
  for (const char* bad : {"HTTP/1.1 010 Odd\r\nContent-Length: 0\r\n\r\n", "HTTP/1.0 000 X\r\n\r\n"}) {
    CAPTURE(bad);
    Heads heads;
    HttpParser p(HttpParser::Kind::Response, {}, heads);
    auto out = p.execute(bad);
    CHECK(out.state == HttpParser::State::Error);
    CHECK(out.error.code == Errc::UpstreamProtocol);
    CHECK(heads.responses.empty());
  }
  Heads heads;
  HttpParser p(HttpParser::Kind::Response, {}, heads);
  CHECK(p.execute("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n").state == HttpParser::State::Paused);
  REQUIRE(heads.responses.size() == 1);
  CHECK(heads.responses[0].status == 204);
}

TEST_CASE("http: parser refuses a request whose Transfer-Encoding is not chunked before its head") {
  for (const char* te : {"gzip", "chunked, gzip", "chu.nked"}) {
    CAPTURE(te);
    Heads heads;
    HttpParser p(HttpParser::Kind::Request, {}, heads);
    const std::string req = std::string("PUT /files/write?path=/tmp/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ") + te +
                            "\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    auto out = p.execute(req);
    CHECK(out.state == HttpParser::State::Error);
    CHECK(out.http_status == 400);
    CHECK(heads.requests.empty());  // no handler ever sees it
  }
  Heads heads;
  HttpParser p(HttpParser::Kind::Request, {}, heads);
  auto out = p.execute("PUT /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n");
  CHECK(out.state == HttpParser::State::Paused);
  REQUIRE(heads.requests.size() == 1);
  CHECK(heads.requests[0].chunked);
}

TEST_CASE("http: parser gives interim responses no body, whatever their headers say") {
  Heads heads;
  HttpParser p(HttpParser::Kind::Response, {}, heads);
  auto out = p.execute("HTTP/1.1 100 Continue\r\nContent-Length: 5\r\n\r\n"
                       "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
  CHECK(out.state == HttpParser::State::Paused);
  REQUIRE(heads.responses.size() == 1);
  CHECK(heads.responses[0].status == 200);
  CHECK(heads.body == "ok");
}

}  // TEST_SUITE
