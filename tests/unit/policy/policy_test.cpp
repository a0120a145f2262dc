#include <doctest/doctest.h>

#include <string>

#include "terminals/policy.hpp"

using namespace terminals;

namespace {

Caps caps(const char* cpu, const char* memory, const char* storage, const char* images) {
  auto c = parse_caps(cpu, memory, storage, images);
  REQUIRE(c.has_value());
  return *c;
}

// The error of parsing `json`, which must fail with `code`.
std::string refusal(const std::string& json, Errc code, const Caps& c = {}) {
  auto p = parse_policy(json, c);
  REQUIRE_MESSAGE(!p.has_value(), json);
  CHECK_MESSAGE(p.error().code == code, (json + " -> " + p.error().message));
  return p.error().message;
}

}  // namespace

TEST_SUITE("unit") {

TEST_CASE("policy: every field of the reference and ours, round-tripped") {
  std::string json = R"({"image":"ghcr.io/open-webui/open-terminal:latest","env":{"A":"1","B":2,"C":true,"D":null},
    "cpu_limit":"500m","memory_limit":"1.5Gi","storage":"10G","storage_mode":"per-user","idle_timeout_minutes":"30",
    "restricted":"true","podSecurityContext":{"runAsUser":1000},"container_security_context":{"readOnlyRootFilesystem":true},
    "pod_template":{"spec":{"nodeSelector":{"a":"b"}}},"isolation":"sandbox","network":{"allow":["pypi.org","10.0.0.0/8"]},
    "pids_limit":100,"max_terminals":50,"team":"data","nested":{"x":[1,2]},"gone":null})";
  auto p = parse_policy(json, {});
  REQUIRE_MESSAGE(p.has_value(), p.error().message);
  CHECK(*p->image == "ghcr.io/open-webui/open-terminal:latest");
  CHECK(p->env == std::map<std::string, std::string>{{"A", "1"}, {"B", "2"}, {"C", "true"}});
  CHECK(*p->cpu_limit == "500m");
  CHECK(*p->memory_limit == "1.5Gi");
  CHECK(*p->storage == "10G");
  CHECK(*p->storage_mode == "per-user");
  CHECK(*p->idle_timeout_minutes == 30);  // numeric string coerced
  CHECK(*p->restricted);
  CHECK(p->pod_security_context == R"({"runAsUser":1000})");  // camelCase read, stored snake_case
  CHECK(*p->isolation == Isolation::Sandbox);
  CHECK(*p->network == "allow");
  CHECK(p->egress_allow == std::vector<std::string>{"pypi.org", "10.0.0.0/8"});
  CHECK(*p->pids_limit == 100);
  CHECK(*p->max_terminals == 50);
  CHECK(p->extra == R"({"team":"data","nested":{"x":[1,2]}})");  // unknown keys kept, nulls dropped

  auto again = parse_policy(policy_to_json(*p), {});
  REQUIRE(again.has_value());
  CHECK(policy_to_json(*again) == policy_to_json(*p));
  CHECK(policy_to_json(Policy{}) == "{}");
  CHECK(policy_to_json(*parse_policy(R"({"x":1})", {})) == R"({"x":1})");
}

TEST_CASE("policy: wrong types and values are 422-class errors naming the field") {
  struct Case {
    const char* json;
    const char* says;
  };
  for (const Case& c : {
           Case{"[]", "policy: must be a JSON object"},
           Case{"{", "policy: not valid JSON"},
           Case{R"({"image":""})", "image: must be a non-empty string"},
           Case{R"({"image":5})", "image: must be a non-empty string"},
           Case{R"({"env":[]})", "env: must be an object"},
           Case{R"({"env":{"1X":"a"}})", "env.1X: not a valid variable name"},
           Case{R"({"env":{"A-B":"a"}})", "env.A-B: not a valid variable name"},
           Case{R"({"env":{"OPEN_TERMINAL_API_KEY":"x"}})", "env.OPEN_TERMINAL_API_KEY: set by the orchestrator"},
           Case{R"({"env":{"A":{"b":1}}})", "env.A: must be a string, number or boolean"},
           Case{R"({"cpu_limit":"abc"})", "cpu_limit"},
           Case{R"({"cpu_limit":"-1"})", "cpu_limit"},
           Case{R"({"cpu_limit":"1e3"})", "cpu_limit"},
           Case{R"({"cpu_limit":[1]})", "cpu_limit: must be a string"},
           Case{R"({"memory_limit":"4 bananas"})", "memory_limit"},
           Case{R"({"memory_limit":"512m"})", "memory_limit"},  // milli vs mebi: ambiguous, refused
           Case{R"({"storage":"ten"})", "storage"},
           Case{R"({"storage_mode":"everyone"})", "storage_mode: 'everyone' is not one of"},
           Case{R"({"idle_timeout_minutes":-1})", "idle_timeout_minutes: -1 is out of range"},
           Case{R"({"idle_timeout_minutes":1.5})", "idle_timeout_minutes: must be a whole number"},
           Case{R"({"idle_timeout_minutes":"soon"})", "idle_timeout_minutes: 'soon' is not a whole number"},
           Case{R"({"restricted":"maybe"})", "restricted: must be true or false"},
           Case{R"({"pod_template":"x"})", "pod_template: must be an object"},
           Case{R"({"isolation":"vm"})", "isolation: unknown isolation 'vm'"},
           Case{R"({"network":"bridge"})", "network: 'bridge' is not none, host"},
           Case{R"({"network":{"allow":[]}})", "network: an allow-list is"},
           Case{R"({"network":{"allow":["a b"]}})", "network.allow: 'a b' is not a host name"},
           Case{R"({"pids_limit":0})", "pids_limit: 0 is out of range"},
           Case{R"({"max_terminals":0})", "max_terminals: 0 is out of range"},
       }) {
    std::string message = refusal(c.json, Errc::InvalidArgument);
    CHECK_MESSAGE(message.find(c.says) != std::string::npos, c.json, " -> ", message);
  }
}

TEST_CASE("policy: quantities in every spelling") {
  for (const char* cpu : {"2", "0.5", "500m", "2000m", "1.25", "\"2\""}) {
    std::string v = cpu[0] == '"' ? cpu : std::string("\"") + cpu + "\"";
    CHECK_MESSAGE(parse_policy(std::string(R"({"cpu_limit":)") + v + "}", {}).has_value(), cpu);
  }
  CHECK(*parse_policy(R"({"cpu_limit":2})", {})->cpu_limit == "2");  // a bare number is read as text
  CHECK(*parse_policy(R"({"cpu_limit":0.5})", {})->cpu_limit == "0.5");
  for (const char* mem : {"4Gi", "4G", "4096Mi", "1.5Gi", "512M", "1073741824", "4GiB", "2g"}) {
    CHECK_MESSAGE(parse_policy(std::string(R"({"memory_limit":")") + mem + "\"}", {}).has_value(), mem);
  }
}

TEST_CASE("policy: caps hold in every spelling, and 0 is not a way around them") {
  Caps c = caps("1", "4Gi", "10Gi", "ghcr.io/open-webui/*,terminals-agent:*");
  // Within the caps.
  for (const char* ok : {R"({"cpu_limit":"1"})", R"({"cpu_limit":"1000m"})", R"({"cpu_limit":"0.5"})",
                         R"({"memory_limit":"4Gi"})", R"({"memory_limit":"4096Mi"})", R"({"memory_limit":"4G"})",
                         R"({"storage":"10Gi"})", R"({"image":"terminals-agent:dev"})",
                         R"({"image":"ghcr.io/open-webui/open-terminal:latest"})"}) {
    auto p = parse_policy(ok, c);
    CHECK_MESSAGE(p.has_value(), ok, " -> ", p ? "" : p.error().message);
  }
  // The reference compared plain floats and skipped these silently.
  struct Case {
    const char* json;
    const char* says;
  };
  for (const Case& k : {Case{R"({"cpu_limit":"2000m"})", "cpu_limit '2000m'"},
                        Case{R"({"cpu_limit":"1001m"})", "exceeds TERMINALS_MAX_CPU"},
                        Case{R"({"cpu_limit":"1.001"})", "exceeds TERMINALS_MAX_CPU"},
                        Case{R"({"cpu_limit":2})", "exceeds TERMINALS_MAX_CPU"},
                        Case{R"({"cpu_limit":"0"})", "means no limit"},
                        Case{R"({"memory_limit":"8G"})", "exceeds TERMINALS_MAX_MEMORY"},
                        Case{R"({"memory_limit":"4097Mi"})", "exceeds TERMINALS_MAX_MEMORY"},
                        Case{R"({"memory_limit":"4.5Gi"})", "exceeds TERMINALS_MAX_MEMORY"},
                        Case{R"({"memory_limit":"5000000000"})", "exceeds TERMINALS_MAX_MEMORY"},
                        Case{R"({"memory_limit":"0"})", "means no limit"},
                        Case{R"({"storage":"11G"})", "exceeds TERMINALS_MAX_STORAGE"},
                        Case{R"({"image":"ubuntu:latest"})", "not in allowed list"},
                        Case{R"({"image":"ghcr.io/open-webui/../evil/x"})", "not in allowed list"},
                        Case{R"({"image":"ghcr.io/open-webui/a/b"})", "not in allowed list"}}) {
    std::string message = refusal(k.json, Errc::PolicyDenied, c);
    CHECK_MESSAGE(message.find(k.says) != std::string::npos, k.json, " -> ", message);
  }
}

TEST_CASE("policy: lifecycle keys and restricted-mode env are refused as the reference refuses them") {
  CHECK(refusal(R"({"reset":{"schedule":"@weekly"},"lifecycle":{}})", Errc::PolicyDenied) ==
        "Lifecycle keys are not valid policy fields: lifecycle, reset (set them with PUT "
        "/api/v1/policies/{id}/lifecycle)");
  std::string m = refusal(R"({"restricted":true,"env":{"OPEN_TERMINAL_PACKAGES":"vim","OPEN_TERMINAL_MULTI_USER":"yes"}})",
                          Errc::PolicyDenied);
  CHECK(m.find("OPEN_TERMINAL_PACKAGES is not supported in restricted Kubernetes/OpenShift mode") != std::string::npos);
  CHECK(m.find("OPEN_TERMINAL_MULTI_USER=true is not supported") != std::string::npos);
  CHECK(parse_policy(R"({"restricted":false,"env":{"OPEN_TERMINAL_PACKAGES":"vim"}})", {}).has_value());
}

TEST_CASE("policy: the spec a terminal gets, with caps checked again at provision time") {
  auto p = parse_policy(R"({"cpu_limit":"1500m","memory_limit":"512Mi","storage":"1G","pids_limit":64,
                            "idle_timeout_minutes":0,"network":"host","env":{"X":"y"}})", {});
  REQUIRE(p.has_value());
  auto spec = policy_spec(*p, {}, "terminals-agent:dev");
  REQUIRE(spec.has_value());
  CHECK(spec->image == "terminals-agent:dev");
  CHECK(*spec->limits.cpus == doctest::Approx(1.5));
  CHECK(*spec->limits.memory_bytes == 512ull << 20);
  CHECK(*spec->limits.storage_bytes == 1000000000ull);
  CHECK(*spec->limits.pids == 64);
  CHECK(*spec->idle_timeout == std::chrono::minutes(0));
  CHECK(spec->network == NetworkMode::Host);
  CHECK(spec->env.at("X") == "y");
  CHECK(spec->env.at("OPEN_TERMINAL_CPU_LIMIT") == "1500m");
  CHECK(spec->env.at("OPEN_TERMINAL_CPU_COUNT") == "1.5");
  CHECK(spec->env.at("OPEN_TERMINAL_MEMORY_LIMIT") == "512Mi");
  CHECK(spec->env.at("OPEN_TERMINAL_MEMORY_BYTES") == "536870912");

  // The operator tightened the caps after the policy was written: provisioning refuses it.
  auto tighter = policy_spec(*p, caps("1", "", "", ""), "terminals-agent:dev");
  REQUIRE(!tighter.has_value());
  CHECK(tighter.error().code == Errc::PolicyDenied);
  CHECK(tighter.error().message.find("cpu_limit '1500m'") != std::string::npos);
  // The default image is held to the allow-list too.
  auto image = policy_spec(Policy{}, caps("", "", "", "ghcr.io/*"), "terminals-agent:dev");
  REQUIRE(!image.has_value());
  CHECK(image.error().message.find("TERMINALS_IMAGE") != std::string::npos);
  // An allow-list becomes the spec's egress list.
  auto allow = policy_spec(*parse_policy(R"({"network":{"allow":["pypi.org"]}})", {}), {}, "img");
  REQUIRE(allow.has_value());
  CHECK(allow->egress_allow == std::vector<std::string>{"pypi.org"});
}

TEST_CASE("policy: caps hold inside pod_template, sidecars included") {
  Caps c = caps("2", "4Gi", "10Gi", "ghcr.io/**");
  auto ok = [&](const std::string& json) {
    auto p = parse_policy(json, c);
    CHECK_MESSAGE(p.has_value(), json, " -> ", p ? "" : p.error().message);
  };
  auto no = [&](const std::string& json, const char* says) {
    std::string m = refusal(json, Errc::PolicyDenied, c);
    CHECK_MESSAGE(m.find(says) != std::string::npos, json, " -> ", m);
  };
  ok(R"({"pod_template":{"metadata":{"labels":{"a":"b"}},"spec":{"runtimeClassName":"kata"}}})");
  ok(R"({"cpu_limit":"1","memory_limit":"2Gi","storage":"2Gi","pod_template":{"spec":{"containers":[{"name":"log","image":"ghcr.io/x/y:1",
        "resources":{"limits":{"cpu":"500m","memory":"1Gi","ephemeral-storage":"1Gi"}}}]}}})");
  // The reference compared plain floats and skipped these spellings silently.
  no(R"({"pod_template":{"spec":{"containers":[{"name":"open-terminal","resources":{"limits":{"cpu":"2001m"}}}]}}})",
     "pod_template.spec.containers[0].resources.limits.cpu '2001m'");
  no(R"({"pod_template":{"spec":{"containers":[{"name":"open-terminal","resources":{"requests":{"memory":"8G"}}}]}}})",
     "resources.requests.memory '8G'");
  no(R"({"pod_template":{"spec":{"initContainers":[{"name":"init","resources":{"limits":{"cpu":"3"}}}]}}})",
     "initContainers[0].resources.limits.cpu");
  // A sidecar carrying what the terminal may not: over the cap together.
  no(R"({"cpu_limit":"2","pod_template":{"spec":{"containers":[{"name":"miner","image":"ghcr.io/x/y",
        "resources":{"limits":{"cpu":"1","memory":"1Gi","ephemeral-storage":"1Gi"}}}]}}})",
     "the pod's containers together ask for cpu 3, over TERMINALS_MAX_CPU 2");
  // A sidecar without a limit would be unbounded.
  no(R"({"pod_template":{"spec":{"containers":[{"name":"miner","image":"ghcr.io/x/y"}]}}})",
     "every container of the pod needs a cpu limit ('miner' has none)");
  no(R"({"pod_template":{"spec":{"containers":[{"name":"x","image":"docker.io/evil",
        "resources":{"limits":{"cpu":"1","memory":"1Gi","ephemeral-storage":"1Gi"}}}]}}})",
     "containers[0].image: Image 'docker.io/evil' not in allowed list");
  CHECK(refusal(R"({"pod_template":{"spec":{"containers":[{"name":"x","resources":{"limits":{"cpu":"lots"}}}]}}})",
                Errc::InvalidArgument, c).find("containers[0].resources.limits.cpu") != std::string::npos);
  // Without caps anything parseable goes.
  CHECK(parse_policy(R"({"pod_template":{"spec":{"containers":[{"name":"m","resources":{"limits":{"cpu":"64"}}}]}}})", {}).has_value());
}

TEST_CASE("policy: a cap is the limit of a policy that sets none") {
  auto spec = policy_spec(Policy{}, caps("1500m", "2Gi", "5G", ""), "img");
  REQUIRE(spec.has_value());
  CHECK(*spec->limits.cpus == doctest::Approx(1.5));
  CHECK(*spec->limits.memory_bytes == 2ull << 30);
  CHECK(*spec->limits.storage_bytes == 5000000000ull);
  auto none = policy_spec(Policy{}, {}, "img");
  REQUIRE(none.has_value());
  CHECK(!none->limits.cpus);
  CHECK(!none->limits.memory_bytes);
}

TEST_CASE("policy: ids") {
  for (const char* ok : {"default", "data-science", "team_a.v2", "A"}) CHECK_MESSAGE(check_policy_id(ok).has_value(), ok);
  for (const char* bad : {"", ".hidden", "a/b", "a b", "..", "x\n"}) CHECK_MESSAGE(!check_policy_id(bad).has_value(), bad);
  CHECK(!check_policy_id(std::string(129, 'a')).has_value());
}

}
