#include <doctest/doctest.h>

#include <string>

#include "http/client.hpp"

using namespace terminals;
using terminals::detail::BodyFraming;
using terminals::detail::serialize_request;

namespace {
RequestHead head(std::string method, Headers headers = {}) {
  RequestHead h;
  h.method = std::move(method);
  h.target = "/a?b=c";
  h.headers = std::move(headers);
  return h;
}
}  // namespace

TEST_SUITE("unit") {

TEST_CASE("client request: GET is sent complete with Host added") {
  std::string out;
  auto plan =
      serialize_request(head("GET", {{"Accept", "*/*"}}), Endpoint::tcp("10.0.0.1", 8080), out);
  REQUIRE(plan);
  CHECK(plan->framing == BodyFraming::None);
  CHECK(plan->idempotent);
  CHECK(plan->keep_alive);
  CHECK(out == "GET /a?b=c HTTP/1.1\r\nHost: 10.0.0.1:8080\r\nAccept: */*\r\n\r\n");
}

TEST_CASE("client request: Host for port 80 and IPv6 and unix sockets and a given Host is kept") {
  std::string out;
  REQUIRE(serialize_request(head("HEAD"), Endpoint::tcp("example", 80), out));
  CHECK(out.find("Host: example\r\n") != std::string::npos);
  out.clear();
  REQUIRE(serialize_request(head("GET"), Endpoint::tcp("::1", 81), out));
  CHECK(out.find("Host: [::1]:81\r\n") != std::string::npos);
  out.clear();
  REQUIRE(serialize_request(head("GET"), Endpoint::unix_socket("/run/x.sock"), out));
  CHECK(out.find("Host: localhost\r\n") != std::string::npos);
  out.clear();
  REQUIRE(
      serialize_request(head("GET", {{"host", "svc.local"}}), Endpoint::tcp("1.2.3.4", 9), out));
  CHECK(out == "GET /a?b=c HTTP/1.1\r\nhost: svc.local\r\n\r\n");
}

TEST_CASE("client request: framing follows Content-Length or else chunked for body methods") {
  const Endpoint ep = Endpoint::tcp("h", 1);
  std::string out;
  auto post = serialize_request(head("POST"), ep, out);
  REQUIRE(post);
  CHECK(post->framing == BodyFraming::Chunked);
  CHECK_FALSE(post->idempotent);
  CHECK(out.ends_with("Transfer-Encoding: chunked\r\n\r\n"));

  out.clear();
  auto put = serialize_request(head("PUT", {{"Content-Length", "12"}}), ep, out);
  REQUIRE(put);
  CHECK(put->framing == BodyFraming::Length);
  CHECK(put->length == 12);
  CHECK(out.find("Transfer-Encoding") == std::string::npos);

  out.clear();
  auto empty = serialize_request(head("POST", {{"Content-Length", "0"}}), ep, out);
  REQUIRE(empty);
  CHECK(empty->framing == BodyFraming::None);

  out.clear();
  auto te = serialize_request(head("PATCH", {{"Transfer-Encoding", "chunked"}}), ep, out);
  REQUIRE(te);
  CHECK(te->framing == BodyFraming::Chunked);
  CHECK(out.find("chunked") == out.rfind("chunked"));  // not added twice

  out.clear();
  auto del = serialize_request(head("DELETE", {{"Connection", "close"}}), ep, out);
  REQUIRE(del);
  CHECK(del->framing == BodyFraming::None);
  CHECK_FALSE(del->keep_alive);
}

TEST_CASE("client request: heads that could smuggle or confuse are refused") {
  auto refused = [](RequestHead h) {
    std::string out;
    auto r = serialize_request(h, Endpoint::tcp("h", 1), out);
    return !r && r.error().code == Errc::InvalidArgument;
  };
  CHECK(refused(head("GET", {{"X", "a\r\nEvil: 1"}})));
  CHECK(refused(head("GET", {{"Bad Name", "v"}})));
  CHECK(refused(head("G ET")));
  CHECK(refused(head("POST", {{"Content-Length", "3"}, {"Transfer-Encoding", "chunked"}})));
  CHECK(refused(head("POST", {{"Content-Length", "3"}, {"Content-Length", "3"}})));
  CHECK(refused(head("POST", {{"Content-Length", "-1"}})));
  CHECK(refused(head("POST", {{"Transfer-Encoding", "gzip"}})));
  RequestHead bad_target = head("GET");
  bad_target.target = "/a b";
  CHECK(refused(bad_target));
}

TEST_CASE("client request: chunk size lines are hex") {
  std::string out;
  detail::append_chunk_header(out, 0x1f40);
  detail::append_chunk_header(out, 1);
  CHECK(out == "1f40\r\n1\r\n");
}

}  // TEST_SUITE
