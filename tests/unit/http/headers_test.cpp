#include <doctest/doctest.h>

#include "terminals/http.hpp"

using namespace terminals;

TEST_SUITE("unit") {

TEST_CASE("headers: case-insensitive lookup / set / remove / tokens") {
  Headers h;
  h.add("Content-Type", "text/plain");
  h.add("connection", "keep-alive, Upgrade");
  h.add("X-Thing", "1");
  h.add("x-thing", "2");
  CHECK(h.get("content-type").value() == "text/plain");
  CHECK(h.count("X-THING") == 2);
  CHECK(h.has_token("Connection", "upgrade"));
  CHECK_FALSE(h.has_token("Connection", "close"));
  h.set("X-Thing", "3");
  CHECK(h.count("x-thing") == 1);
  CHECK(h.get("x-thing").value() == "3");
  CHECK(h.remove("CONNECTION") == 1);
  CHECK_FALSE(h.has("connection"));
  CHECK_FALSE(h.get("missing"));
  CHECK(iequals("Content-Length", "content-length"));
  CHECK_FALSE(iequals("Content-Length", "content-lengthx"));
}

TEST_CASE("request head: path and query") {
  RequestHead r;
  r.target = "/p/default/files/list?directory=/home&x=1";
  CHECK(r.path() == "/p/default/files/list");
  CHECK(r.query() == "directory=/home&x=1");
  r.target = "/health";
  CHECK(r.query().empty());
  CHECK(std::string(status_reason(431)) == "Request Header Fields Too Large");
  CHECK(std::string(status_reason(799)) == "Unknown");
}

}  // TEST_SUITE
