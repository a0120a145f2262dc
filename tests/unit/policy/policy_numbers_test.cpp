// Found by fuzz/policy_fuzz.cpp: JSON numbers outside int64 in a policy hit a RapidJSON
// assertion (quantities above 2^63) or an undefined double-to-integer cast (whole fields); a
// repeated "network" key kept the first one's allow-list.

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "terminals/policy.hpp"

using namespace terminals;

TEST_SUITE("unit") {

TEST_CASE("policy: a quantity written as a number above 2^63 keeps its digits") {
  auto p = parse_policy(R"({"memory_limit":18446744073709551615})", Caps{});
  REQUIRE(p.has_value());
  CHECK(p->memory_limit == "18446744073709551615");
  auto cpu = parse_policy(R"({"cpu_limit":18446744073709551615})", Caps{});
  REQUIRE_FALSE(cpu.has_value());  // too many millicores for 64 bits
  CHECK(cpu.error().message.find("18446744073709551615") != std::string::npos);
  CHECK(cpu.error().message.find("too large") != std::string::npos);
}

TEST_CASE("policy: whole-number fields refuse numbers beyond int64 as out of range") {
  for (const char* json : {R"({"pids_limit":1e300})", R"({"idle_timeout_minutes":-1e19})",
                           R"({"max_terminals":18446744073709551615})", R"({"pids_limit":9.3e18})"}) {
    CAPTURE(json);
    auto p = parse_policy(json, Caps{});
    REQUIRE_FALSE(p.has_value());
    CHECK(p.error().code == Errc::InvalidArgument);
    CHECK(p.error().message.find("out of range") != std::string::npos);
  }
  auto ok = parse_policy(R"({"pids_limit":1e3,"idle_timeout_minutes":60.0})", Caps{});
  REQUIRE(ok.has_value());
  CHECK(ok->pids_limit == 1000u);
  CHECK(ok->idle_timeout_minutes == 60);
  auto frac = parse_policy(R"({"pids_limit":1.5})", Caps{});
  REQUIRE_FALSE(frac.has_value());
  CHECK(frac.error().message.find("whole number") != std::string::npos);
}

TEST_CASE("policy: a repeated network key replaces the allow-list too") {
  auto host = parse_policy(R"({"network":{"allow":["pypi.org"]},"network":"host"})", Caps{});
  REQUIRE(host.has_value());
  CHECK(host->network == "host");
  CHECK(host->egress_allow.empty());
  auto two = parse_policy(R"({"network":{"allow":["a.example"]},"network":{"allow":["b.example"]}})", Caps{});
  REQUIRE(two.has_value());
  CHECK(two->egress_allow == std::vector<std::string>{"b.example"});
  CHECK(parse_policy(policy_to_json(*host), Caps{})->egress_allow.empty());
}

}  // TEST_SUITE
