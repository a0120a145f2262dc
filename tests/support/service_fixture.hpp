#pragma once

// ServiceFixture: the whole service (terminals-cli serve as a library object) on loopback, with a
// real LocalBackend (isolation none) and real agents, for integration tests of the service.

#include <doctest/doctest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include "json/json.hpp"
#include "support/loop_runner.hpp"
#include "terminals/http_client.hpp"
#include "terminals/service.hpp"
#include "terminals/settings.hpp"

namespace test {

using namespace terminals;

using namespace std::chrono_literals;

inline constexpr const char* kServiceKey = "service-key-for-tests-0123456789";

struct ServiceFixture : test::LoopFixture {
  test::TempDir data;
  ServicePtr service;
  std::unique_ptr<HttpClient> client;

  Settings settings;

  explicit ServiceFixture(std::function<void(Settings&, Loop&)> configure = {}) {
    ::chmod(data.path().c_str(), 0711);
    settings.host = "127.0.0.1";
    settings.port = 0;
    settings.data_dir = data.path() + "/data";
    settings.api_key = kServiceKey;
    settings.agent_path = TERMINALS_AGENT_PATH;
    // Isolation none keeps these tests about the service; the local backend's own tests cover
    // the sandbox. As root the default would be sandbox, which works too but is slower.
    settings.isolation = "none";
    settings.max_concurrent_provisions = 16;
    if (configure) configure(settings, *loop);
    start_service();
  }

  void start_service() {
    auto created = Service::create(*loop, settings);
    REQUIRE_MESSAGE(created.has_value(), (created ? "" : created.error().message));
    service = std::move(created).value();
    std::optional<Status> started;
    service->start([&](Status st) { started.emplace(std::move(st)); });
    REQUIRE(test::run_until(*loop, [&] { return started.has_value(); }, 20s));
    REQUIRE_MESSAGE(started->has_value(), (*started ? "" : started->error().message));
    client = HttpClient::create(*loop);
  }

  /// Shuts the service down (terminals keep running, as in production) and starts a new one on
  /// the same data directory: what a restart of terminals-cli serve does.
  void restart() {
    client.reset();
    std::optional<Status> stopped;
    service->shutdown(2s, [&](Status s) { stopped.emplace(std::move(s)); });
    REQUIRE(test::run_until(*loop, [&] { return stopped.has_value(); }, 20s));
    service.reset();
    test::run_for(*loop, 50ms);
    start_service();
  }

  Endpoint at() const { return service->local_endpoint(); }

  FetchResponse fetch(std::string method, std::string target, std::string body = {},
                      std::optional<std::string> key = std::string(kServiceKey),
                      std::optional<std::string> user = std::string("alice"), Headers extra = {}) {
    RequestHead head;
    head.method = std::move(method);
    head.target = std::move(target);
    head.headers = std::move(extra);
    if (key) head.headers.add("Authorization", "Bearer " + *key);
    if (user) head.headers.add("X-User-Id", *user);
    if (!body.empty()) head.headers.add("Content-Type", "application/json");
    std::optional<Result<FetchResponse>> got;
    client->fetch(at(), std::move(head), std::move(body), [&](Result<FetchResponse> r) { got.emplace(std::move(r)); });
    REQUIRE(test::run_until(*loop, [&] { return got.has_value(); }, 30s));
    REQUIRE_MESSAGE(got->has_value(), (*got ? "" : got->error().message));
    return std::move(*got).value();
  }

  std::size_t terminal_records() const {
    std::size_t n = 0;
    for (const auto& e : std::filesystem::directory_iterator(data.path() + "/data/terminals")) {
      if (e.path().extension() == ".json") ++n;
    }
    return n;
  }

  void finish() {
    client.reset();
    std::optional<Status> stopped;
    service->shutdown(2s, [&](Status s) { stopped.emplace(std::move(s)); });
    REQUIRE(test::run_until(*loop, [&] { return stopped.has_value(); }, 20s));
    service.reset();
    // The agents outlive the service by design (adopted next start); end them for the test.
    std::system(("pkill -KILL -f -- '--home " + data.path() + "/data/homes' >/dev/null 2>&1").c_str());
    test::run_for(*loop, 100ms);
  }
};

inline std::string json_field(const std::string& body, const char* name) {
  auto doc = detail::parse_json(body);
  if (!doc || !doc->IsObject() || !doc->HasMember(name)) return {};
  const auto& v = (*doc)[name];
  if (v.IsString()) return v.GetString();
  return detail::to_json(v);
}

}  // namespace test
