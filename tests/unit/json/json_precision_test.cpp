// Found by fuzz/policy_fuzz.cpp: a policy's extra key holding a large double changed by one ulp
// on every parse -> policy_to_json -> parse round trip.

#include <doctest/doctest.h>

#include <string>

#include "json/json.hpp"
#include "terminals/policy.hpp"

using namespace terminals;

TEST_SUITE("unit") {

TEST_CASE("json: doubles survive parse and write unchanged") {
  for (const char* text : {"[1.0184467440737095e29]", "[0.1]", "[2.5]", "[1.7976931348623157e308]",
                           "[5e-324]", "[123456789.12345679]", "[9.007199254740993e15]"}) {
    CAPTURE(text);
    auto doc = detail::parse_json(text);
    REQUIRE(doc.has_value());
    const std::string once = detail::to_json(*doc);
    auto again = detail::parse_json(once);
    REQUIRE(again.has_value());
    CHECK(detail::to_json(*again) == once);
    CHECK((*doc)[0].GetDouble() == (*again)[0].GetDouble());
  }
}

TEST_CASE("policy: extra keys with large numbers round-trip exactly") {
  auto p = parse_policy(R"({"network":"host","x":101844674407370955161573741824,"y":[1,2.5,null]})", Caps{});
  REQUIRE(p.has_value());
  const std::string once = policy_to_json(*p);
  auto again = parse_policy(once, Caps{});
  REQUIRE(again.has_value());
  CHECK(policy_to_json(*again) == once);
}

}  // TEST_SUITE
