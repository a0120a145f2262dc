// Policies through terminals-cli serve's admin API: CRUD with the reference's shapes, validation
// and caps over HTTP, a policy's spec reaching its terminals, max_terminals, persistence across
// a restart, scheduled resets (applied, not repeated after a restart, not skipped while down)
// and the audit log.

#include <doctest/doctest.h>

#include <chrono>
#include <algorithm>
#include <ctime>
#include <thread>

#include <unistd.h>
#include <fstream>
#include <string>
#include <vector>

#include "json/json.hpp"
#include "support/loop_runner.hpp"
#include "support/service_fixture.hpp"

using namespace terminals;
using namespace std::chrono_literals;
using test::json_field;
using test::ServiceFixture;

namespace {

// An ISO-8601 UTC time `from_now` ahead, for one-shot reset schedules.
std::string utc_in(std::chrono::seconds from_now) {
  std::time_t t = std::time(nullptr) + from_now.count();
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::vector<std::string> audit_actions(const std::string& data_dir) {
  std::vector<std::string> actions;
  std::ifstream in(data_dir + "/audit.log");
  for (std::string line; std::getline(in, line);) {
    auto doc = detail::parse_json(line);
    REQUIRE_MESSAGE(doc.has_value(), line);  // every line is JSON on its own
    actions.emplace_back(detail::json_string(*doc, "action").value_or(""));
  }
  return actions;
}

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

}  // namespace

TEST_SUITE("integration") {

TEST_CASE("service policies: CRUD with the reference's shapes, validation and caps over HTTP") {
  ServiceFixture f([](Settings& s, Loop&) {
    s.max_cpu = "1";
    s.max_memory = "4Gi";
    s.allowed_images = "ghcr.io/open-webui/*";
  });
  auto admin = [&](const char* method, const std::string& path, std::string body = {}) {
    return f.fetch(method, path, std::move(body), std::string(test::kServiceKey), std::nullopt);
  };
  auto created = admin("POST", "/api/v1/policies", R"({"id":"dev","data":{"cpu_limit":"500m","memory_limit":"1Gi"}})");
  CHECK(created.head.status == 201);
  CHECK(json_field(created.body, "id") == "dev");
  CHECK(json_field(created.body, "data") == R"({"cpu_limit":"500m","memory_limit":"1Gi"})");
  CHECK(json_field(created.body, "revision") == "1");
  CHECK(json_field(created.body, "created_at").find("+00:00") != std::string::npos);
  auto dup = admin("POST", "/api/v1/policies", R"({"id":"dev","data":{}})");
  CHECK(dup.head.status == 409);
  CHECK(dup.body == R"({"detail":"Policy 'dev' already exists"})");

  auto put = admin("PUT", "/api/v1/policies/dev", R"({"cpu_limit":"1000m","idle_timeout_minutes":15})");
  CHECK(put.head.status == 200);
  CHECK(json_field(put.body, "revision") == "2");
  CHECK(json_field(put.body, "data") == R"({"cpu_limit":"1000m","idle_timeout_minutes":15})");  // full replace
  CHECK(admin("PUT", "/api/v1/policies/ops", "{}").head.status == 200);  // PUT creates
  auto listed = admin("GET", "/api/v1/policies");
  CHECK(listed.head.status == 200);
  CHECK(listed.body.find(R"("id":"dev")") < listed.body.find(R"("id":"ops")"));  // oldest first

  // If-Match guards read-edit-write clients against lost updates.
  auto stale = f.fetch("PUT", "/api/v1/policies/dev", "{}", std::string(test::kServiceKey), std::nullopt,
                       Headers{{"If-Match", "\"1\""}});
  CHECK(stale.head.status == 409);
  CHECK(stale.body.find("at revision 2, not revision 1") != std::string::npos);
  CHECK(f.fetch("PUT", "/api/v1/policies/dev", "{}", std::string(test::kServiceKey), std::nullopt,
                Headers{{"If-Match", "x"}}).head.status == 400);
  CHECK(f.fetch("PUT", "/api/v1/policies/new", "{}", std::string(test::kServiceKey), std::nullopt,
                Headers{{"If-Match", "0"}}).head.status == 200);
  CHECK(admin("DELETE", "/api/v1/policies/new").head.status == 200);

  // Caps in every spelling are refused with 400 naming the field and the cap.
  auto over = admin("PUT", "/api/v1/policies/dev", R"({"cpu_limit":"2000m"})");
  CHECK(over.head.status == 400);
  CHECK(over.body.find("cpu_limit '2000m' (2 cores) exceeds TERMINALS_MAX_CPU 1") != std::string::npos);
  CHECK(admin("PUT", "/api/v1/policies/dev", R"({"memory_limit":"8G"})").head.status == 400);
  CHECK(admin("PUT", "/api/v1/policies/dev", R"({"memory_limit":"0"})").head.status == 400);
  CHECK(admin("PUT", "/api/v1/policies/dev", R"({"image":"ubuntu"})").head.status == 400);
  CHECK(admin("PUT", "/api/v1/policies/dev", R"({"reset":{"schedule":"@weekly"}})").head.status == 400);
  // Wrong types are 422 in FastAPI's shape, with the field in loc.
  auto bad = admin("PUT", "/api/v1/policies/dev", R"({"idle_timeout_minutes":"soon"})");
  CHECK(bad.head.status == 422);
  CHECK(bad.body.find(R"("loc":["body","idle_timeout_minutes"])") != std::string::npos);
  CHECK(admin("PUT", "/api/v1/policies/a%20b", "{}").head.status == 422);
  CHECK(admin("PUT", "/api/v1/policies/dev", "[1]").head.status == 422);
  // A refused write changed nothing.
  CHECK(json_field(admin("GET", "/api/v1/policies/dev").body, "revision") == "2");

  // Lifecycle configuration.
  CHECK(admin("GET", "/api/v1/policies/dev/lifecycle").body == R"({"policy_id":"dev","data":{}})");
  auto lc = admin("PUT", "/api/v1/policies/dev/lifecycle", R"({"reset":{"schedule":"0 3 * * mon","timezone":"Europe/Berlin"},"x":null})");
  CHECK(lc.head.status == 200);
  CHECK(lc.body == R"({"policy_id":"dev","data":{"reset":{"schedule":"0 3 * * mon","timezone":"Europe/Berlin"}}})");
  auto bad_tz = admin("PUT", "/api/v1/policies/dev/lifecycle", R"({"reset":{"schedule":"@weekly","timezone":"Mars/Olympus"}})");
  CHECK(bad_tz.head.status == 400);
  CHECK(bad_tz.body.find("Invalid lifecycle configuration") != std::string::npos);
  CHECK(admin("PUT", "/api/v1/policies/dev/lifecycle", R"({"reset":{"schedule":"61 * * * *"}})").head.status == 400);

  auto status = admin("GET", "/api/v1/status");
  CHECK(json_field(status.body, "policy_count") == "2");
  CHECK(admin("DELETE", "/api/v1/policies/ops").body == R"({"ok":true})");
  CHECK(admin("DELETE", "/api/v1/policies/ops").head.status == 404);
  CHECK(admin("GET", "/api/v1/policies/ops").body == R"({"detail":"Policy 'ops' not found"})");
  // Admin routes refuse users' requests without the service key.
  CHECK(f.fetch("GET", "/api/v1/policies", {}, std::string("not-the-key-0123456789"), std::nullopt).head.status == 401);

  auto actions = audit_actions(f.settings.data_dir);
  CHECK(contains(actions, "policy.create"));
  CHECK(contains(actions, "policy.put"));
  CHECK(contains(actions, "policy.lifecycle"));
  CHECK(contains(actions, "policy.delete"));
  f.finish();
}

TEST_CASE("service policies: a policy's spec reaches its terminals, max_terminals holds, policies survive a restart") {
  ServiceFixture f;
  auto admin = [&](const char* method, const std::string& path, std::string body = {}) {
    return f.fetch(method, path, std::move(body), std::string(test::kServiceKey), std::nullopt);
  };
  REQUIRE(admin("PUT", "/api/v1/policies/dev", R"({"cpu_limit":"500m","env":{"TEAM":"blue"},"max_terminals":1})").head.status == 200);
  auto run = f.fetch("POST", "/p/dev/execute?wait=10", R"({"command":"echo $TEAM $OPEN_TERMINAL_CPU_COUNT"})",
                     std::string(test::kServiceKey), std::string("alice"));
  CHECK(run.head.status == 200);
  CHECK(run.body.find("blue 0.5") != std::string::npos);
  // One terminal of "dev" runs: a second user is refused, the first one still served.
  auto second = f.fetch("GET", "/p/dev/files/cwd", {}, std::string(test::kServiceKey), std::string("bob"));
  CHECK(second.head.status == 429);
  CHECK(second.body.find("at most 1 running terminals") != std::string::npos);
  CHECK(f.fetch("GET", "/p/dev/files/cwd", {}, std::string(test::kServiceKey), std::string("alice")).head.status == 200);
  CHECK(f.fetch("GET", "/p/unknown/files/cwd").head.status == 404);

  f.restart();
  auto after = admin("GET", "/api/v1/policies/dev");
  CHECK(after.head.status == 200);
  CHECK(json_field(after.body, "data") == R"({"env":{"TEAM":"blue"},"cpu_limit":"500m","max_terminals":1})");
  // The limit holds after the restart too (alice's terminal was adopted, still running).
  CHECK(f.fetch("GET", "/p/dev/files/cwd", {}, std::string(test::kServiceKey), std::string("bob")).head.status == 429);
  // Lifting it by a PUT takes effect at once.
  REQUIRE(admin("PUT", "/api/v1/policies/dev", R"({"cpu_limit":"500m","env":{"TEAM":"blue"}})").head.status == 200);
  CHECK(f.fetch("GET", "/p/dev/files/cwd", {}, std::string(test::kServiceKey), std::string("bob")).head.status == 200);
  auto actions = audit_actions(f.settings.data_dir);
  CHECK(contains(actions, "terminal.provisioned"));
  f.finish();
}

TEST_CASE("service policies: a policy cannot lower isolation to none on an isolated service") {
  if (::geteuid() != 0) {
    MESSAGE("SKIPPED: needs root (isolation user creates OS accounts); CI runs as root");
    return;
  }
  ServiceFixture f([](Settings& s, Loop&) { s.isolation = "user"; });
  auto admin = [&](const char* method, const std::string& path, std::string body = {}) {
    return f.fetch(method, path, std::move(body), std::string(test::kServiceKey), std::nullopt);
  };
  REQUIRE(admin("PUT", "/api/v1/policies/loose", R"({"isolation":"none"})").head.status == 200);
  auto r = f.fetch("GET", "/p/loose/files/cwd");
  CHECK(r.head.status == 403);
  CHECK(r.body.find("isolation none") != std::string::npos);
  f.finish();
}

TEST_CASE("service policies: a scheduled reset is applied, not repeated after a restart, and not skipped while down") {
  ServiceFixture f([](Settings& s, Loop&) { s.lifecycle_interval = 1s; });
  auto admin = [&](const char* method, const std::string& path, std::string body = {}) {
    return f.fetch(method, path, std::move(body), std::string(test::kServiceKey), std::nullopt);
  };
  auto user_fetch = [&](const char* method, const std::string& path, std::string body = {}) {
    return f.fetch(method, path, std::move(body), std::string(test::kServiceKey), std::string("carol"));
  };
  auto file_exists = [&] {
    auto r = user_fetch("POST", "/p/lab/execute?wait=10", R"({"command":"test -f marker && echo is-there || echo not-there"})");
    REQUIRE(r.head.status == 200);
    return r.body.find(R"("data":"is-there)") != std::string::npos;
  };
  REQUIRE(admin("PUT", "/api/v1/policies/lab", "{}").head.status == 200);
  REQUIRE(user_fetch("POST", "/p/lab/execute?wait=10", R"({"command":"echo x > marker"})").head.status == 200);
  REQUIRE(file_exists());

  // 1. A one-shot reset a few seconds ahead: the terminal is first seen before it fires, then reset.
  REQUIRE(admin("PUT", "/api/v1/policies/lab/lifecycle", R"({"reset":{"schedule":")" + utc_in(3s) + R"("}})").head.status == 200);
  bool reset_seen = test::run_until(*f.loop, [&] {
    auto actions = audit_actions(f.settings.data_dir);
    return contains(actions, "lifecycle.reset");
  }, 15s);
  REQUIRE(reset_seen);
  CHECK(!file_exists());  // provisioned fresh, without the old home

  // 2. After a restart the applied one-shot is not applied again.
  REQUIRE(user_fetch("POST", "/p/lab/execute?wait=10", R"({"command":"echo y > marker"})").head.status == 200);
  f.restart();
  test::run_for(*f.loop, 3s);  // three sweeps
  CHECK(file_exists());
  std::size_t resets = 0;
  for (const auto& a : audit_actions(f.settings.data_dir)) resets += a == "lifecycle.reset";
  CHECK(resets == 1);

  // 3. A firing while the service is down is applied after it starts again.
  REQUIRE(admin("PUT", "/api/v1/policies/lab/lifecycle", R"({"reset":{"schedule":")" + utc_in(4s) + R"("}})").head.status == 200);
  test::run_for(*f.loop, 1500ms);  // seen under the new schedule (state persisted)
  f.client.reset();
  std::optional<Status> stopped;
  f.service->shutdown(2s, [&](Status s) { stopped.emplace(std::move(s)); });
  REQUIRE(test::run_until(*f.loop, [&] { return stopped.has_value(); }, 20s));
  f.service.reset();
  std::this_thread::sleep_for(5s);  // the firing passes while nothing runs
  f.start_service();
  REQUIRE(test::run_until(*f.loop, [&] {
    std::size_t n = 0;
    for (const auto& a : audit_actions(f.settings.data_dir)) n += a == "lifecycle.reset";
    return n == 2;
  }, 15s));
  CHECK(!file_exists());
  f.finish();
}

}
