#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "http/router.hpp"
#include "http/url.hpp"

using namespace terminals;
using namespace terminals::detail;

TEST_SUITE("unit") {

TEST_CASE("router: literals / parameters / rest-of-path / methods / order") {
  Router<std::string> r;
  r.add("GET", "/health", "health");
  r.add("GET", "/execute/{id}/status", "status");
  r.add("DELETE", "/execute/{id}", "kill");
  r.add("*", "/proxy/{port}/{path...}", "proxy");
  r.add("GET", "/p/{policy}/openapi.json", "policy-openapi");
  r.add("*", "/p/{policy}/{path...}", "policy-proxy");
  r.add("*", "/{path...}", "catch-all");

  auto m = r.match("GET", "/execute/20260101-000000-abcdef/status");
  REQUIRE(m.outcome == Router<std::string>::Outcome::Matched);
  CHECK(*m.handler == "status");
  CHECK(m.params.get("id") == "20260101-000000-abcdef");

  m = r.match("POST", "/proxy/8080/a/b/c.html");
  CHECK(*m.handler == "proxy");
  CHECK(m.params.get("port") == "8080");
  CHECK(m.params.get("path") == "a/b/c.html");

  CHECK(*r.match("GET", "/p/dev/openapi.json").handler == "policy-openapi");
  CHECK(*r.match("POST", "/p/dev/execute").handler == "policy-proxy");
  CHECK(*r.match("HEAD", "/health").handler == "health");
  CHECK(*r.match("GET", "/files/list").handler == "catch-all");

  Router<int> strict;
  strict.add("GET", "/health", 1);
  strict.add("DELETE", "/execute/{id}", 2);
  strict.add("POST", "/execute/{id}", 3);
  CHECK(strict.match("POST", "/health").outcome == Router<int>::Outcome::MethodNotAllowed);
  CHECK(strict.match("POST", "/health").allowed == std::vector<std::string>{"GET"});
  CHECK(strict.match("PUT", "/execute/x").allowed == std::vector<std::string>{"DELETE", "POST"});
  CHECK(strict.match("GET", "/nope").outcome == Router<int>::Outcome::NotFound);
  CHECK(strict.match("DELETE", "/execute/").outcome == Router<int>::Outcome::NotFound);
  CHECK(strict.match("DELETE", "/execute/a/b").outcome == Router<int>::Outcome::NotFound);
}

TEST_CASE("url: percent decoding / query parsing / null dropping") {
  CHECK(percent_decode("/home/a%20b").value() == "/home/a b");
  CHECK(percent_decode("a+b", true).value() == "a b");
  CHECK(percent_decode("a+b").value() == "a+b");
  CHECK_FALSE(percent_decode("%zz"));
  CHECK_FALSE(percent_decode("%4"));
  CHECK_FALSE(percent_decode("abc%"));
  CHECK(percent_encode("a b/c", true) == "a%20b/c");
  CHECK(percent_encode("a b/c") == "a%20b%2Fc");

  auto q = Query::parse("path=%2Fhome%2Fx&include=*.py&include=*.md&wait=NULL&empty=&flag").value();
  CHECK(q.get("path").value() == "/home/x");
  CHECK(q.get_all("include").size() == 2);
  CHECK(q.get("empty").value().empty());
  CHECK(q.has("flag"));
  q.drop_null_values();
  CHECK_FALSE(q.has("wait"));
  CHECK_FALSE(Query::parse("a=%GG"));
}

}  // TEST_SUITE
