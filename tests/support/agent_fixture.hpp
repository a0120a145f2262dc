#pragma once

// An Agent on a loopback port with an HttpClient to talk to it, for the agent's route tests.
// Options can be adjusted before start() through the constructor's `configure` argument.

#include <doctest/doctest.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "support/loop_runner.hpp"
#include "terminals/agent.hpp"
#include "terminals/http_client.hpp"

namespace test {

using namespace terminals;

using namespace std::chrono_literals;

inline constexpr const char* kKey = "secret-key";

struct AgentFixture : LoopFixture {
  TempDir home;
  AgentPtr agent;
  std::unique_ptr<HttpClient> client;

  template <class Configure>
  explicit AgentFixture(Configure configure) {
    start(configure);
  }
  AgentFixture() {
    start([](AgentOptions&) {});
  }

  template <class Configure>
  void start(Configure configure) {
    AgentOptions options;
    options.listen = Endpoint::tcp("127.0.0.1", 0);
    options.api_key = kKey;
    options.home = home.path();
    configure(options);
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
    REQUIRE(run_until(*loop, [&] { return got.has_value(); }));
    REQUIRE(got->has_value());
    return std::move(*got).value();
  }

  void finish() {
    client.reset();
    bool done = false;
    agent->shutdown(1s, [&](Status) { done = true; });
    REQUIRE(run_until(*loop, [&] { return done; }));
    agent.reset();
    check_no_leaks();
  }
};


}  // namespace test
