// Found by fuzz/policy_fuzz.cpp: RapidJSON read "5.922337203685471e308" as infinity, and a
// policy holding it was written back as cut-short JSON ({"cpw_limit": and nothing more).

#include <doctest/doctest.h>

#include <string>

#include "json/json.hpp"
#include "terminals/policy.hpp"

using namespace terminals;

TEST_SUITE("unit") {

TEST_CASE("json: numbers beyond the double range are refused, also nested") {
  for (const char* text : {"5.922337203685471e308", "[1,{\"a\":[1.8e308]}]", "{\"x\":-1.7976931348623159e308}"}) {
    CAPTURE(text);
    CHECK_FALSE(detail::parse_json(text).has_value());
  }
  auto max = detail::parse_json("[1.7976931348623157e308,-1.7976931348623157e308,5e-324]");
  REQUIRE(max.has_value());
  CHECK(detail::to_json(*max).find("1.7976931348623157e308") != std::string::npos);
}

TEST_CASE("policy: a number too large for a double is refused, not stored cut short") {
  auto p = parse_policy(R"({"cpw_limit":5.922337203685471e308,"restricted":0})", Caps{});
  REQUIRE_FALSE(p.has_value());
  CHECK(p.error().code == Errc::InvalidArgument);
}

}  // TEST_SUITE
