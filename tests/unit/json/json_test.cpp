#include <doctest/doctest.h>

#include "json/json.hpp"

using namespace terminals;
using namespace terminals::detail;

TEST_SUITE("unit") {

TEST_CASE("json: parse / typed lookups and clear errors") {
  auto doc = parse_json(R"({"command":"ls","wait":1.5,"n":3,"ok":true,"extra":{}})");
  REQUIRE(doc);
  CHECK(json_string(*doc, "command").value() == "ls");
  CHECK(json_number(*doc, "wait").value() == 1.5);
  CHECK(json_int(*doc, "n").value() == 3);
  CHECK(json_bool(*doc, "ok").value());
  CHECK_FALSE(json_string(*doc, "n"));   // wrong type
  CHECK_FALSE(json_string(*doc, "nope"));  // missing
  for (const char* bad : {"", "{", "{\"a\":}", "{} trailing", "[1,]", "\"\xff\""}) {
    auto r = parse_json(bad);
    CHECK_MESSAGE(!r, bad);
    if (!r) {
      CHECK(r.error().code == Errc::InvalidArgument);
      CHECK(r.error().message.find("invalid JSON at offset") == 0);
    }
  }
  CHECK(parse_json(" {} \n"));
}

TEST_CASE("json: writer escapes and nests") {
  std::string s = JsonWriter()
                      .object()
                      .field("detail", std::string_view("quote \" and \\ and \n"))
                      .key("list").array().value(1).value(true).null().end_array()
                      .field("big", std::uint64_t(1) << 60)
                      .end_object()
                      .take();
  CHECK(s == R"({"detail":"quote \" and \\ and \n","list":[1,true,null],"big":1152921504606846976})");
  CHECK(detail_json("Invalid API key") == R"({"detail":"Invalid API key"})");
  auto round = parse_json(s);
  REQUIRE(round);
  CHECK(to_json(*round) == s);
}

}  // TEST_SUITE
