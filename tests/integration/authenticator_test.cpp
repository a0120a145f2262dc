// The Authenticator against a fake Open WebUI on loopback: a terminals::Server on the test's
// loop answering GET /api/v1/auths/ like the real endpoint (it reads `Authorization: Bearer
// <token>`; a known token gets 200 with the session user, anything else 401, no header 403),
// counting the requests it receives.

#include <doctest/doctest.h>

#include <chrono>
#include <ctime>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "auth/authenticator.hpp"
#include "auth/jwt.hpp"
#include "json/json.hpp"
#include "support/loop_runner.hpp"
#include "terminals/server.hpp"

using namespace terminals;
using namespace terminals::detail;
using namespace std::chrono_literals;

namespace {

constexpr const char* kServiceKey = "service-key-0123456789";
constexpr const char* kAlice = "0b6d2a4e-8c1f-4b7e-9a0e-2f8e1c7d5a93";
constexpr const char* kBob = "bob@example.com";

struct FakeOpenWebUI {
  std::map<std::string, std::string> users;  // token -> id
  int requests = 0;
  bool hold = false;  // keep requests unanswered (in `held`)
  std::vector<ServerExchangePtr> held;
  std::unique_ptr<Server> server;

  explicit FakeOpenWebUI(Loop& loop) {
    users["tok-alice"] = kAlice;
    users["tok-bob"] = kBob;
    ServerOptions options;
    options.listen = Endpoint::tcp("127.0.0.1", 0);
    server = Server::create(loop, options, [this](ServerExchangePtr ex) { handle(std::move(ex)); }).value();
  }

  std::string url() const { return "http://127.0.0.1:" + std::to_string(server->local_endpoint().port) + "/"; }

  void handle(ServerExchangePtr ex) {
    ++requests;
    const RequestHead& req = ex->request();
    Headers json{{"Content-Type", "application/json"}};
    if (req.method != "GET" || req.path() != "/api/v1/auths/") {
      return ex->respond(404, json, detail_json("Not Found"));
    }
    if (hold) {
      held.push_back(std::move(ex));
      return;
    }
    auto auth = req.headers.get("Authorization");
    if (!auth || auth->substr(0, 7) != "Bearer ") return ex->respond(403, json, detail_json("Not authenticated"));
    std::string token(auth->substr(7));
    if (token == "tok-garbage") return ex->respond(200, json, "<html>not json</html>");
    if (token == "tok-noid") return ex->respond(200, json, R"({"email":"x@example.com"})");
    if (token == "tok-badid") return ex->respond(200, json, R"({"id":"../../etc"})");
    if (token == "tok-500") return ex->respond(500, json, detail_json("Internal Server Error"));
    auto it = users.find(token);
    if (it == users.end()) {
      return ex->respond(401, json, detail_json("Your session has expired or the token is invalid. Please sign in again."));
    }
    ex->respond(200, json,
                JsonWriter().object().field("id", it->second).field("email", "user@example.com")
                    .field("name", "User").field("role", "user").field("token", token).end_object().take());
  }
};

struct Fixture : test::LoopFixture {
  FakeOpenWebUI owui{*loop};
  std::unique_ptr<Authenticator> auth;

  void make(AuthOptions options) {
    auto created = Authenticator::create(*loop, std::move(options));
    REQUIRE(created.has_value());
    auth = std::move(created).value();
  }
  void make_owui(std::chrono::seconds ttl = 60s) {
    AuthOptions o;
    o.service_key = kServiceKey;
    o.open_webui_url = owui.url();
    o.token_cache_ttl = ttl;
    make(std::move(o));
  }

  static RequestHead head(std::optional<std::string> bearer, std::optional<std::string> user = std::nullopt) {
    RequestHead h;
    if (bearer) h.headers.add("Authorization", "Bearer " + *bearer);
    if (user) h.headers.add("X-User-Id", *user);
    return h;
  }

  Result<Identity> wait(const std::function<void(Callback<Identity>)>& start) {
    std::optional<Result<Identity>> out;
    int calls = 0;
    start([&](Result<Identity> r) {
      ++calls;
      out.emplace(std::move(r));
    });
    CHECK_FALSE(out.has_value());  // never synchronously
    REQUIRE(test::run_until(*loop, [&] { return out.has_value(); }));
    CHECK(calls == 1);
    return std::move(*out);
  }
  Result<Identity> http(const RequestHead& h) {
    return wait([&](Callback<Identity> cb) { auth->authenticate(h, std::move(cb)); });
  }
  Result<Identity> ws(std::string token, std::optional<std::string> user) {
    return wait([&](Callback<Identity> cb) {
      auth->authenticate_token(token, user ? std::optional<std::string_view>(*user) : std::nullopt, std::move(cb));
    });
  }

  void finish() {
    auth.reset();
    owui.held.clear();
    owui.server.reset();
    check_no_leaks();
  }
};

int status_of(const Result<Identity>& r) {
  REQUIRE_FALSE(r.has_value());
  return auth_http_status(r.error());
}

}  // namespace

TEST_SUITE("integration") {

TEST_CASE("auth: open webui token yields the verified identity / 401 / 403 / 400") {
  Fixture f;
  f.make_owui();
  auto alice = f.http(Fixture::head("tok-alice"));
  REQUIRE(alice.has_value());
  CHECK(alice->user_id == kAlice);
  CHECK_FALSE(alice->service);
  CHECK(f.owui.requests == 1);

  auto matching = f.http(Fixture::head("tok-alice", std::string(kAlice)));
  REQUIRE(matching.has_value());
  CHECK(matching->user_id == kAlice);

  auto mismatch = f.http(Fixture::head("tok-alice", std::string(kBob)));
  CHECK(status_of(mismatch) == 403);
  CHECK(mismatch.error().message == "X-User-Id does not match authenticated identity");

  auto invalid = f.http(Fixture::head("tok-unknown"));
  CHECK(status_of(invalid) == 401);
  CHECK(invalid.error().message == "Invalid token");
  CHECK(f.owui.requests == 2);
  // A rejected token is remembered briefly: the retry does not reach Open WebUI.
  CHECK(status_of(f.http(Fixture::head("tok-unknown"))) == 401);
  CHECK(f.owui.requests == 2);

  // Malformed X-User-Id: refused before any upstream call.
  CHECK(status_of(f.http(Fixture::head("tok-bob", std::string("")))) == 400);
  CHECK(status_of(f.http(Fixture::head("tok-bob", std::string("../x")))) == 400);
  CHECK(f.owui.requests == 2);
  // No or a non-bearer Authorization header.
  auto missing = f.http(Fixture::head(std::nullopt, std::string(kAlice)));
  CHECK(status_of(missing) == 401);
  CHECK(missing.error().message == "Missing Authorization header");
  RequestHead basic;
  basic.headers.add("Authorization", "Basic dXNlcjpwYXNz");
  CHECK(status_of(f.http(basic)) == 401);
  CHECK(f.owui.requests == 2);
  // User tokens never grant admin.
  CHECK_FALSE(f.auth->authenticate_admin(Fixture::head("tok-alice")).has_value());
  CHECK_FALSE(f.auth->is_service_key("tok-alice"));
  f.finish();
}

TEST_CASE("auth: open webui unreachable or answering garbage gives 502 and is not cached") {
  test::LoopFixture base;
  std::uint16_t closed_port = 0;
  {
    ServerOptions options;
    options.listen = Endpoint::tcp("127.0.0.1", 0);
    auto s = Server::create(*base.loop, options, [](ServerExchangePtr) {}).value();
    closed_port = s->local_endpoint().port;
  }
  AuthOptions o;
  o.service_key = kServiceKey;
  o.open_webui_url = "http://127.0.0.1:" + std::to_string(closed_port);
  auto auth = Authenticator::create(*base.loop, o).value();
  for (int i = 0; i < 2; ++i) {
    std::optional<Result<Identity>> out;
    auth->authenticate(Fixture::head("tok-alice"), [&](Result<Identity> r) { out.emplace(std::move(r)); });
    REQUIRE(test::run_until(*base.loop, [&] { return out.has_value(); }));
    REQUIRE_FALSE(out->has_value());
    CHECK(auth_http_status(out->error()) == 502);
    CHECK(out->error().message == "Failed to reach Open WebUI");
    CHECK(auth_ws_close_code(out->error()) == 4001);
  }
  CHECK(auth->upstream_calls() == 2);  // transport failures are retried, not cached
  auth.reset();
  base.check_no_leaks();

  Fixture f;
  f.make_owui();
  for (const char* token : {"tok-garbage", "tok-noid", "tok-badid", "tok-500"}) {
    CAPTURE(token);
    auto r = f.http(Fixture::head(token));
    CHECK(status_of(r) == 502);
    CHECK(r.error().code == Errc::UpstreamProtocol);
  }
  CHECK(f.owui.requests == 4);
  f.finish();
}

TEST_CASE("auth: token cache hit then expiry after the ttl") {
  Fixture f;
  f.make_owui(1s);
  REQUIRE(f.http(Fixture::head("tok-alice")).has_value());
  CHECK(f.owui.requests == 1);
  auto again = f.http(Fixture::head("tok-alice", std::string(kAlice)));
  REQUIRE(again.has_value());
  CHECK(again->user_id == kAlice);
  CHECK(f.owui.requests == 1);  // served from the cache
  CHECK(f.auth->cache_size() == 1);
  // Another token is its own entry.
  REQUIRE(f.http(Fixture::head("tok-bob")).has_value());
  CHECK(f.owui.requests == 2);
  test::run_for(*f.loop, 1100ms);
  REQUIRE(f.http(Fixture::head("tok-alice")).has_value());
  CHECK(f.owui.requests == 3);  // expired: validated again
  f.finish();

  // TTL 0 disables the cache.
  Fixture g;
  g.make_owui(0s);
  REQUIRE(g.http(Fixture::head("tok-alice")).has_value());
  REQUIRE(g.http(Fixture::head("tok-alice")).has_value());
  CHECK(g.owui.requests == 2);
  CHECK(g.auth->cache_size() == 0);
  g.finish();
}

TEST_CASE("auth: the cache is bounded and evicts the oldest entry") {
  Fixture f;
  AuthOptions o;
  o.service_key = kServiceKey;
  o.open_webui_url = f.owui.url();
  o.max_cache_entries = 2;
  for (int i = 0; i < 3; ++i) f.owui.users["tok-" + std::to_string(i)] = "user" + std::to_string(i);
  f.make(std::move(o));
  for (int i = 0; i < 3; ++i) REQUIRE(f.http(Fixture::head("tok-" + std::to_string(i))).has_value());
  CHECK(f.auth->cache_size() == 2);
  CHECK(f.owui.requests == 3);
  REQUIRE(f.http(Fixture::head("tok-2")).has_value());  // newest: cached
  CHECK(f.owui.requests == 3);
  REQUIRE(f.http(Fixture::head("tok-0")).has_value());  // oldest: evicted
  CHECK(f.owui.requests == 4);
  CHECK(f.auth->cache_size() == 2);
  f.finish();
}

TEST_CASE("auth: concurrent validations of one token share one upstream request") {
  Fixture f;
  f.make_owui();
  std::vector<std::optional<Result<Identity>>> results(20);
  for (auto& slot : results) {
    f.auth->authenticate(Fixture::head("tok-alice"), [&slot](Result<Identity> r) { slot.emplace(std::move(r)); });
  }
  // One for another token alongside: its own request.
  std::optional<Result<Identity>> bob;
  f.auth->authenticate(Fixture::head("tok-bob"), [&](Result<Identity> r) { bob.emplace(std::move(r)); });
  CHECK(f.auth->pending_validations() == 2);
  REQUIRE(test::run_until(*f.loop, [&] {
    for (auto& r : results) if (!r) return false;
    return bob.has_value();
  }));
  for (auto& r : results) {
    REQUIRE(r->has_value());
    CHECK((*r)->user_id == kAlice);
  }
  REQUIRE(bob->has_value());
  CHECK((*bob)->user_id == kBob);
  CHECK(f.owui.requests == 2);
  CHECK(f.auth->upstream_calls() == 2);
  CHECK(f.auth->pending_validations() == 0);
  f.finish();
}

TEST_CASE("auth: destroying the authenticator completes pending validations once") {
  Fixture f;
  f.make_owui();
  f.owui.hold = true;
  int calls = 0;
  std::optional<Result<Identity>> out;
  for (int i = 0; i < 2; ++i) {
    f.auth->authenticate(Fixture::head("tok-alice"), [&](Result<Identity> r) {
      ++calls;
      out.emplace(std::move(r));
    });
  }
  REQUIRE(test::run_until(*f.loop, [&] { return f.owui.held.size() == 1; }));
  CHECK(calls == 0);
  f.auth.reset();
  REQUIRE(test::run_until(*f.loop, [&] { return calls == 2; }));
  REQUIRE_FALSE(out->has_value());
  CHECK(auth_http_status(out->error()) == 503);
  test::run_for(*f.loop, 50ms);
  CHECK(calls == 2);
  f.finish();
}

TEST_CASE("auth: service key with X-User-Id and the admin check") {
  for (bool with_owui : {false, true}) {
    CAPTURE(with_owui);
    Fixture f;
    if (with_owui) {
      f.make_owui();
    } else {
      AuthOptions o;
      o.service_key = kServiceKey;
      f.make(std::move(o));
    }
    auto ok = f.http(Fixture::head(kServiceKey, std::string(kBob)));
    REQUIRE(ok.has_value());
    CHECK(ok->user_id == kBob);
    CHECK(ok->service);

    auto missing = f.http(Fixture::head(kServiceKey));
    CHECK(status_of(missing) == 401);
    CHECK(missing.error().message == "Missing X-User-Id header");
    CHECK(status_of(f.http(Fixture::head(kServiceKey, std::string("")))) == 400);
    CHECK(status_of(f.http(Fixture::head(kServiceKey, std::string(".")))) == 400);
    CHECK(status_of(f.http(Fixture::head(kServiceKey, std::string(300, 'a')))) == 400);
    CHECK(status_of(f.http(Fixture::head(kServiceKey, std::string("a\x01")))) == 400);
    RequestHead twice = Fixture::head(kServiceKey, std::string("alice"));
    twice.headers.add("X-User-Id", "bob");
    CHECK(status_of(f.http(twice)) == 400);

    // A wrong key (a prefix, or longer) is refused.
    auto wrong = f.http(Fixture::head(std::string(kServiceKey) + "x", std::string(kBob)));
    CHECK(status_of(wrong) == 401);
    CHECK(wrong.error().message == (with_owui ? "Invalid token" : "Invalid API key"));
    CHECK(status_of(f.http(Fixture::head("service-key", std::string(kBob)))) == 401);

    CHECK(f.auth->is_service_key(kServiceKey));
    CHECK_FALSE(f.auth->is_service_key("service-key-012345678"));
    CHECK_FALSE(f.auth->is_service_key(""));
    CHECK(f.auth->authenticate_admin(Fixture::head(kServiceKey)).has_value());
    auto no_admin = f.auth->authenticate_admin(Fixture::head(std::nullopt));
    REQUIRE_FALSE(no_admin.has_value());
    CHECK(auth_http_status(no_admin.error()) == 401);
    CHECK(f.auth->authenticate_admin(Fixture::head("nope")).error().message == "Invalid admin API key");
    // The service key never reaches Open WebUI.
    CHECK(f.owui.requests == (with_owui ? 2 : 0));  // the two wrong keys were checked as tokens
    f.finish();
  }
}

TEST_CASE("auth: websocket first-message token with user_id") {
  Fixture f;
  f.make_owui();
  auto ok = f.ws("tok-alice", std::string(kAlice));
  REQUIRE(ok.has_value());
  CHECK(ok->user_id == kAlice);
  auto mismatch = f.ws("tok-alice", std::string(kBob));
  CHECK(auth_ws_close_code(mismatch.error()) == 4003);
  CHECK(mismatch.error().message == "user_id does not match authenticated identity");
  auto missing = f.ws("tok-alice", std::nullopt);
  CHECK(auth_ws_close_code(missing.error()) == 4002);
  CHECK(missing.error().message == "Missing user_id");
  CHECK(auth_ws_close_code(f.ws("tok-alice", std::string("")).error()) == 4002);
  CHECK(auth_ws_close_code(f.ws("tok-alice", std::string("a/b")).error()) == 4002);
  auto bad = f.ws("tok-unknown", std::string(kAlice));
  CHECK(auth_ws_close_code(bad.error()) == 4001);
  CHECK(bad.error().message == "Invalid token");
  CHECK(auth_ws_close_code(f.ws("", std::string(kAlice)).error()) == 4001);
  auto service = f.ws(kServiceKey, std::string(kBob));
  REQUIRE(service.has_value());
  CHECK(service->user_id == kBob);
  CHECK(service->service);
  CHECK(f.owui.requests == 2);  // tok-alice once (cached), tok-unknown once
  f.finish();
}

TEST_CASE("auth: offline JWT verification makes no upstream call") {
  Fixture f;
  AuthOptions o;
  o.service_key = kServiceKey;
  o.open_webui_url = f.owui.url();
  o.jwt_secret = "webui-secret";
  f.make(std::move(o));
  auto now = static_cast<std::int64_t>(std::time(nullptr));
  auto good = sign_jwt_hs256(R"({"id":")" + std::string(kAlice) + R"(","exp":)" + std::to_string(now + 600) + "}",
                             "webui-secret");
  auto r = f.http(Fixture::head(good, std::string(kAlice)));
  REQUIRE(r.has_value());
  CHECK(r->user_id == kAlice);
  CHECK(status_of(f.http(Fixture::head(good, std::string(kBob)))) == 403);
  auto expired = sign_jwt_hs256(R"({"id":"u1","exp":)" + std::to_string(now - 120) + "}", "webui-secret");
  auto e = f.http(Fixture::head(expired));
  CHECK(status_of(e) == 401);
  CHECK(e.error().message == "Invalid token: expired");
  auto forged = sign_jwt_hs256(R"({"id":"u1"})", "other-secret");
  CHECK(status_of(f.http(Fixture::head(forged))) == 401);
  CHECK(status_of(f.http(Fixture::head("tok-alice"))) == 401);  // not a JWT
  auto ws = f.ws(good, std::string(kAlice));
  REQUIRE(ws.has_value());
  CHECK(f.owui.requests == 0);
  f.finish();
}

TEST_CASE("auth: open mode checks nothing but the user id") {
  Fixture f;
  AuthOptions o;
  o.open_mode = true;
  f.make(std::move(o));
  auto anyone = f.http(Fixture::head(std::nullopt, std::string("alice")));
  REQUIRE(anyone.has_value());
  CHECK(anyone->user_id == "alice");
  CHECK_FALSE(anyone->service);
  REQUIRE(f.http(Fixture::head("whatever", std::string("alice"))).has_value());
  CHECK(status_of(f.http(Fixture::head(std::nullopt))) == 401);
  CHECK(status_of(f.http(Fixture::head(std::nullopt, std::string("..")))) == 400);
  REQUIRE(f.ws("", std::string("alice")).has_value());
  CHECK(auth_ws_close_code(f.ws("", std::nullopt).error()) == 4002);
  CHECK(f.auth->is_service_key(""));
  CHECK(f.auth->authenticate_admin(Fixture::head(std::nullopt)).has_value());
  f.finish();
}

TEST_CASE("auth: invalid options are refused") {
  test::LoopFixture f;
  AuthOptions none;
  CHECK_FALSE(Authenticator::create(*f.loop, none).has_value());  // no key and not open
  AuthOptions bad_url;
  bad_url.service_key = kServiceKey;
  bad_url.open_webui_url = "ftp://example.com";
  CHECK_FALSE(Authenticator::create(*f.loop, bad_url).has_value());
  bad_url.open_webui_url = "http://example.com/?x=1";
  CHECK_FALSE(Authenticator::create(*f.loop, bad_url).has_value());
  f.check_no_leaks();
}

}  // TEST_SUITE
