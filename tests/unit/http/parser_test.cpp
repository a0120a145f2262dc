#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "http/parser.hpp"

using namespace terminals;
using terminals::detail::HttpParser;

namespace {

struct Recorder : HttpParser::Listener {
  std::vector<RequestHead> requests;
  std::vector<ResponseHead> responses;
  std::string body;
  int completed = 0;
  bool no_body = false;

  void on_request_head(RequestHead&& h) override { requests.push_back(std::move(h)); }
  bool on_response_head(ResponseHead&& h) override {
    responses.push_back(std::move(h));
    return no_body;
  }
  void on_body(std::string_view d) override { body.append(d); }
  void on_message_complete() override { ++completed; }
};

// Feeds `input` in pieces of `step` bytes, resuming after each completed message like a server
// does. Returns the final outcome state and the total bytes consumed.
HttpParser::Outcome feed(HttpParser& p, std::string_view input, std::size_t step) {
  HttpParser::Outcome last;
  std::size_t total = 0;
  std::string pending;
  std::size_t pos = 0;
  while (pos < input.size() || !pending.empty()) {
    if (pos < input.size()) {
      pending.append(input.substr(pos, step));
      pos += step;
    }
    while (!pending.empty()) {
      last = p.execute(pending);
      total += last.consumed;
      pending.erase(0, last.consumed);
      if (last.state == HttpParser::State::Paused) {
        p.resume();
        last.state = HttpParser::State::Ok;
        continue;
      }
      if (last.state != HttpParser::State::Ok) {
        last.consumed = total;
        return last;
      }
      break;
    }
  }
  last.consumed = total;
  return last;
}

}  // namespace

TEST_SUITE("unit") {

TEST_CASE("parser: pipelined requests fed one byte at a time") {
  const std::string wire =
      "GET /a?x=1 HTTP/1.1\r\nHost: h\r\nX-Long: " + std::string(100, 'v') + "\r\n\r\n"
      "POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
      "PUT /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n";
  for (std::size_t step : {std::size_t(1), std::size_t(7), wire.size()}) {
    CAPTURE(step);
    Recorder r;
    HttpParser p(HttpParser::Kind::Request, {}, r);
    auto out = feed(p, wire, step);
    CHECK(out.state == HttpParser::State::Ok);
    REQUIRE(r.requests.size() == 3);
    CHECK(r.completed == 3);
    CHECK(r.requests[0].method == "GET");
    CHECK(r.requests[0].target == "/a?x=1");
    CHECK(r.requests[0].headers.get("x-long").value() == std::string(100, 'v'));
    CHECK(r.requests[1].content_length.value() == 5);
    CHECK(r.requests[2].chunked);
    CHECK(r.body == "helloabcde");
    CHECK(r.requests[0].keep_alive);
  }
}

TEST_CASE("parser: pauses after each message so pipelined requests are handled in order") {
  Recorder r;
  HttpParser p(HttpParser::Kind::Request, {}, r);
  std::string two = "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n";
  auto out = p.execute(two);
  CHECK(out.state == HttpParser::State::Paused);
  CHECK(r.requests.size() == 1);
  CHECK(out.consumed == two.size() / 2);
  p.resume();
  out = p.execute(std::string_view(two).substr(out.consumed));
  CHECK(out.state == HttpParser::State::Paused);
  CHECK(r.requests.size() == 2);
  CHECK(r.requests[1].target == "/2");
}

TEST_CASE("parser: request smuggling and malformed input are rejected with 400") {
  const char* cases[] = {
      "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
      "GARBAGE\r\n\r\n",
      "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\nX: \x01\r\n\r\n",
      "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
  };
  for (const char* c : cases) {
    std::string text = c;
    CAPTURE(text);
    Recorder r;
    HttpParser p(HttpParser::Kind::Request, {}, r);
    auto out = feed(p, c, 3);
    CHECK(out.state == HttpParser::State::Error);
    CHECK(out.http_status == 400);
    CHECK(out.error.source == ErrorSource::Llhttp);
    CHECK(out.error.message.find("malformed HTTP") == 0);
  }
}

TEST_CASE("parser: obsolete line folding is refused with 400, however the bytes arrive") {
  // llhttp 8 took "Connection: Upgrade\r\n a" as an upgrade while the value it handed over
  // read "Upgrade a" (found by fuzz/http_request_fuzz): a head that meant two things.
  const char* folded[] = {
      "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n a\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nX-A: b\r\n\t  c\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nX-Empty:\r\n c\r\n\r\n",
  };
  for (const char* c : folded) {
    const std::string text = c;
    // Where the error is reported does not depend on the cuts either (the fuzzer checks this).
    std::size_t at = 0;
    {
      Recorder r;
      HttpParser p(HttpParser::Kind::Request, {}, r);
      at = feed(p, text, text.size()).consumed;
    }
    for (std::size_t step = 1; step <= text.size(); ++step) {
      CAPTURE(text);
      CAPTURE(step);
      Recorder r;
      HttpParser p(HttpParser::Kind::Request, {}, r);
      auto out = feed(p, text, step);
      CHECK(out.state == HttpParser::State::Error);
      CHECK(out.http_status == 400);
      CHECK(out.error.message.find("line folding") != std::string::npos);
      CHECK(out.consumed == at);
      CHECK(r.requests.empty());
    }
  }
  // llhttp refuses a folded Content-Length by itself ("1\r\n 0" is no number): 400 all the same.
  {
    Recorder r;
    HttpParser p(HttpParser::Kind::Request, {}, r);
    auto out = feed(p, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n 0\r\n\r\nx", 4);
    CHECK(out.http_status == 400);
    CHECK(r.requests.empty());
  }
  // Spaces inside a value, and values cut anywhere, are not folding.
  const std::string plain =
      "GET / HTTP/1.1\r\nHost: h\r\nX-A:   b  c \t d\r\nX-B: \r\nX-C: e\r\n\r\n";
  for (std::size_t step = 1; step <= plain.size(); ++step) {
    CAPTURE(step);
    Recorder r;
    HttpParser p(HttpParser::Kind::Request, {}, r);
    auto out = feed(p, plain, step);
    CHECK(out.state == HttpParser::State::Ok);
    REQUIRE(r.requests.size() == 1);
    CHECK(r.requests[0].headers.get("x-a").value() == "b  c \t d");
    CHECK(r.requests[0].headers.get("x-c").value() == "e");
  }
  // A folded response from upstream is a protocol error too.
  Recorder r;
  HttpParser p(HttpParser::Kind::Response, {}, r);
  auto out = feed(p, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX: a\r\n b\r\n\r\nok", 5);
  CHECK(out.state == HttpParser::State::Error);
  CHECK(out.error.code == Errc::UpstreamProtocol);
  CHECK(r.responses.empty());
}

TEST_CASE("parser: header size and count limits answer 431") {
  HttpParser::Limits limits;
  limits.max_header_bytes = 1024;
  limits.max_headers = 5;
  {
    Recorder r;
    HttpParser p(HttpParser::Kind::Request, limits, r);
    auto out = feed(p, "GET / HTTP/1.1\r\nX: " + std::string(2000, 'a') + "\r\n\r\n", 100);
    CHECK(out.state == HttpParser::State::Error);
    CHECK(out.http_status == 431);
    CHECK(out.error.code == Errc::LimitExceeded);
    CHECK(r.requests.empty());
  }
  {
    Recorder r;
    HttpParser p(HttpParser::Kind::Request, limits, r);
    std::string wire = "GET / HTTP/1.1\r\n";
    for (int i = 0; i < 6; ++i) wire += "H" + std::to_string(i) + ": v\r\n";
    auto out = feed(p, wire + "\r\n", 1);
    CHECK(out.http_status == 431);
  }
  {
    // A long URL counts too.
    Recorder r;
    HttpParser p(HttpParser::Kind::Request, limits, r);
    auto out = feed(p, "GET /" + std::string(5000, 'u') + " HTTP/1.1\r\n\r\n", 4096);
    CHECK(out.http_status == 431);
  }
}

TEST_CASE("parser: upgrade stops at the end of the head and reports the leftover bytes") {
  Recorder r;
  HttpParser p(HttpParser::Kind::Request, {}, r);
  std::string head =
      "GET /api/terminals/abc HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
  std::string extra = "\x81\x05hello-after-head";
  auto out = p.execute(head + extra);
  CHECK(out.state == HttpParser::State::Upgrade);
  CHECK(out.consumed == head.size());
  REQUIRE(r.requests.size() == 1);
  CHECK(r.requests[0].upgrade);
}

TEST_CASE("parser: responses: framing / HEAD / interim 100 / 101 upgrade / close-delimited") {
  {
    Recorder r;
    HttpParser p(HttpParser::Kind::Response, {}, r);
    auto out = feed(p, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 1);
    CHECK(out.state == HttpParser::State::Ok);
    REQUIRE(r.responses.size() == 1);  // the interim response is hidden
    CHECK(r.responses[0].status == 200);
    CHECK(r.body == "ok");
  }
  {
    Recorder r;
    r.no_body = true;  // a reply to HEAD
    HttpParser p(HttpParser::Kind::Response, {}, r);
    auto out = p.execute("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
    CHECK(out.state == HttpParser::State::Paused);
    CHECK(r.completed == 1);
    CHECK(r.body.empty());
  }
  {
    Recorder r;
    HttpParser p(HttpParser::Kind::Response, {}, r);
    std::string head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    auto out = p.execute(head + "frame");
    CHECK(out.state == HttpParser::State::Upgrade);
    CHECK(out.consumed == head.size());
    CHECK(r.responses.at(0).upgrade);
  }
  {
    Recorder r;
    HttpParser p(HttpParser::Kind::Response, {}, r);
    auto out = p.execute("HTTP/1.0 200 OK\r\n\r\nuntil the end");
    CHECK(out.state == HttpParser::State::Ok);
    CHECK(r.completed == 0);
    CHECK(p.finish());
    CHECK(r.completed == 1);
    CHECK(r.body == "until the end");
  }
  {
    Recorder r;
    HttpParser p(HttpParser::Kind::Response, {}, r);
    (void)p.execute("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort");
    CHECK(p.in_message());
    auto st = p.finish();
    CHECK_FALSE(st);
    CHECK(st.error().code == Errc::UpstreamProtocol);
  }
}

}  // TEST_SUITE
