// The agent's HTTP routes, over a real socket with HttpClient.

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

#include "support/loop_runner.hpp"
#include "terminals/agent.hpp"
#include "terminals/http_client.hpp"

using namespace terminals;
using namespace std::chrono_literals;

namespace {

constexpr const char* kKey = "secret-key";

struct AgentFixture : test::LoopFixture {
  test::TempDir home;
  AgentPtr agent;
  std::unique_ptr<HttpClient> client;

  AgentFixture() {
    AgentOptions options;
    options.listen = Endpoint::tcp("127.0.0.1", 0);
    options.api_key = kKey;
    options.home = home.path();
    auto created = Agent::create(*loop, std::move(options));
    REQUIRE(created.has_value());
    agent = std::move(created).value();
    client = HttpClient::create(*loop);
  }

  FetchResponse fetch(std::string method, std::string target, std::string body = {},
                      std::optional<std::string> key = std::string(kKey),
                      Headers extra = {}) {
    RequestHead head;
    head.method = std::move(method);
    head.target = std::move(target);
    head.headers = std::move(extra);
    if (key) head.headers.add("Authorization", "Bearer " + *key);
    if (!body.empty()) head.headers.add("Content-Type", "application/json");
    std::optional<Result<FetchResponse>> got;
    client->fetch(agent->local_endpoint(), std::move(head), std::move(body),
                  [&](Result<FetchResponse> r) { got.emplace(std::move(r)); });
    REQUIRE(test::run_until(*loop, [&] { return got.has_value(); }));
    REQUIRE(got->has_value());
    return std::move(*got).value();
  }

  void finish() {
    client.reset();
    bool done = false;
    agent->shutdown(1s, [&](Status) { done = true; });
    REQUIRE(test::run_until(*loop, [&] { return done; }));
    agent.reset();
    check_no_leaks();
  }
};

}  // namespace

TEST_SUITE("integration") {

TEST_CASE("agent routes: service routes and authentication") {
  AgentFixture f;
  auto health = f.fetch("GET", "/health", {}, std::nullopt);
  CHECK(health.head.status == 200);
  CHECK(health.body == R"({"status":"ok"})");

  auto config = f.fetch("GET", "/api/config", {}, std::nullopt);
  CHECK(config.head.status == 200);
  CHECK(config.body == R"({"features":{"terminal":true,"notebooks":false,"system":true}})");

  auto missing = f.fetch("GET", "/system", {}, std::nullopt);
  CHECK(missing.head.status == 401);
  CHECK(missing.body == R"({"detail":"Invalid API key"})");
  auto wrong = f.fetch("GET", "/system", {}, std::string("secret-kez"));
  CHECK(wrong.head.status == 401);
  CHECK(wrong.body == R"({"detail":"Invalid API key"})");
  auto system = f.fetch("GET", "/system");
  CHECK(system.head.status == 200);
  CHECK(system.body.find(R"({"prompt":")") == 0);

  auto not_found = f.fetch("GET", "/nope");
  CHECK(not_found.head.status == 404);
  CHECK(not_found.body == R"({"detail":"Not Found"})");
  auto not_allowed = f.fetch("POST", "/health", "{}");
  CHECK(not_allowed.head.status == 405);
  CHECK(not_allowed.body == R"({"detail":"Method Not Allowed"})");
  f.finish();
}

TEST_CASE("agent routes: an empty key is refused without no_auth") {
  test::LoopFixture f;
  AgentOptions options;
  options.listen = Endpoint::tcp("127.0.0.1", 0);
  auto created = Agent::create(*f.loop, options);
  REQUIRE_FALSE(created.has_value());
  CHECK(created.error().code == Errc::InvalidArgument);
  f.check_no_leaks();
}

}  // TEST_SUITE
