// Found by fuzz/policy_fuzz.cpp: RapidJSON read "5.922337203685471e308" as infinity, and a
// policy holding it was written back as cut-short JSON ({"cpw_limit": and nothing more); it
// decoded a lone "\uDDDD" to surrogate bytes, written back as a string that does not parse.

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

TEST_CASE("json: a lone surrogate escape is refused, in values and in names; pairs are text") {
  for (const char* text : {R"("\uDDDD")", R"({"\uDC00x":1})", R"([1,{"a":["ok","\uDFFF"]}])",
                           R"("\uDE00\uD83D")"}) {
    CAPTURE(text);
    auto r = detail::parse_json(text);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message.find("surrogate") != std::string::npos);
  }
  // A pair is one character; U+D7FF sits just below the surrogates; an escaped backslash
  // before "uDC00" is no escape. All written back and read again unchanged.
  for (const char* text : {R"(["\uD83D\uDE00"])", R"(["\uD7FF"])", R"(["\\uDC00"])"}) {
    CAPTURE(text);
    auto r = detail::parse_json(text);
    REQUIRE(r.has_value());
    auto again = detail::parse_json(detail::to_json(*r));
    REQUIRE(again.has_value());
    CHECK(detail::to_json(*again) == detail::to_json(*r));
  }
}

TEST_CASE("policy: a lone surrogate escape is refused, not stored as a policy that does not load") {
  auto p = parse_policy(R"({"\uDDDD0tionrk":[1,48.57777,null]})", Caps{});
  REQUIRE_FALSE(p.has_value());
  CHECK(p.error().code == Errc::InvalidArgument);
}

TEST_CASE("policy: a number too large for a double is refused, not stored cut short") {
  auto p = parse_policy(R"({"cpw_limit":5.922337203685471e308,"restricted":0})", Caps{});
  REQUIRE_FALSE(p.has_value());
  CHECK(p.error().code == Errc::InvalidArgument);
}

}  // TEST_SUITE
