// The whole service (terminals-cli serve as a library object) end to end: auth, the
// orchestrator over a real LocalBackend with real agents, the proxy, the WebSocket, admin routes,
// and Open WebUI mode against a small fake Open WebUI on loopback.

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "json/json.hpp"
#include "support/agent_fixture.hpp"
#include "support/loop_runner.hpp"
#include "support/ws_client.hpp"
#include "terminals/http_client.hpp"
#include "terminals/server.hpp"
#include "terminals/service.hpp"
#include "support/service_fixture.hpp"

using namespace terminals;
using namespace std::chrono_literals;
using test::ServiceFixture;
using test::kServiceKey;
using test::json_field;

namespace {

}  // namespace

TEST_SUITE("integration") {

TEST_CASE("service: health is open and the data plane needs credentials and a user") {
  ServiceFixture f;
  auto health = f.fetch("GET", "/health", {}, std::nullopt, std::nullopt);
  CHECK(health.head.status == 200);
  CHECK(health.body == R"({"status":true})");
  CHECK(f.fetch("GET", "/files/list", {}, std::nullopt, std::nullopt).head.status == 401);
  CHECK(f.fetch("GET", "/files/list", {}, std::string("wrong-key-0123456789"), std::string("a")).head.status == 401);
  auto missing = f.fetch("GET", "/files/list", {}, std::string(kServiceKey), std::nullopt);
  CHECK(missing.head.status == 422);
  CHECK(missing.body.find(R"("loc":["header","X-User-Id"])") != std::string::npos);
  for (const std::string& bad : std::vector<std::string>{"", "../x", "a/b", "a b", std::string(300, 'x')}) {
    auto r = f.fetch("GET", "/files/list", {}, std::string(kServiceKey), bad);
    CHECK_MESSAGE(r.head.status == 400, "user id '" << bad << "' got " << r.head.status);
  }
  auto ctx = f.fetch("GET", "/files/list", {}, std::string(kServiceKey), std::string("alice"),
                     Headers{{"X-Terminal-Context-Id", "project:x"}});
  CHECK(ctx.head.status == 400);
  CHECK(ctx.body.find("only chat and automation contexts") != std::string::npos);
  CHECK(f.fetch("GET", "/api/v1/terminals", {}, std::nullopt, std::nullopt).head.status == 401);
  CHECK(f.terminal_records() == 0);  // nothing was provisioned for any of those
  // Request ids and CORS preflights.
  CHECK(health.head.headers.get("X-Request-Id").has_value());
  auto traced = f.fetch("GET", "/health", {}, std::nullopt, std::nullopt, Headers{{"X-Request-Id", "req-123"}});
  CHECK(traced.head.headers.get("X-Request-Id") == "req-123");
  auto preflight = f.fetch("OPTIONS", "/files/list", {}, std::nullopt, std::nullopt,
                           Headers{{"Origin", "https://chat.example.com"},
                                   {"Access-Control-Request-Method", "GET"},
                                   {"Access-Control-Request-Headers", "authorization, x-user-id"}});
  CHECK(preflight.head.status == 200);
  CHECK(preflight.head.headers.get("Access-Control-Allow-Headers") == "authorization, x-user-id");
  CHECK(f.terminal_records() == 0);
  f.finish();
}

TEST_CASE("service: Open Terminal routes behave through the proxy as on the agent") {
  ServiceFixture f;
  auto write = f.fetch("POST", "/files/write", R"({"path":"notes/a.txt","content":"hello\n"})");
  REQUIRE(write.head.status == 200);
  CHECK(json_field(write.body, "size") == "6");
  auto read = f.fetch("GET", "/files/read?path=notes/a.txt");
  CHECK(read.head.status == 200);
  CHECK(json_field(read.body, "content") == "hello\n");
  auto missing = f.fetch("GET", "/files/read?path=nope.txt");
  CHECK(missing.head.status == 404);
  CHECK(missing.body == R"({"detail":"File not found"})");
  auto invalid = f.fetch("GET", "/files/read");
  CHECK(invalid.head.status == 422);
  auto run = f.fetch("POST", "/execute?wait=10", R"({"command":"echo through-the-proxy; id -u"})");
  CHECK(run.head.status == 200);
  CHECK(run.body.find("through-the-proxy") != std::string::npos);
  // The agent saw its own key, not ours: a command's environment holds neither.
  auto env = f.fetch("POST", "/execute?wait=10", R"({"command":"env"})");
  CHECK(env.body.find(kServiceKey) == std::string::npos);
  CHECK(env.body.find("OPEN_TERMINAL_API_KEY") == std::string::npos);
  // Policy routes: only "default" exists until policies arrive.
  CHECK(f.fetch("GET", "/p/default/files/cwd").head.status == 200);
  auto unknown = f.fetch("GET", "/p/nope/files/cwd");
  CHECK(unknown.head.status == 404);
  CHECK(unknown.body == R"({"detail":"Policy 'nope' not found"})");
  // Users are apart: bob does not see alice's file.
  CHECK(f.fetch("GET", "/files/read?path=notes/a.txt", {}, std::string(kServiceKey), std::string("bob")).head.status == 404);
  f.finish();
}

TEST_CASE("service: each Open Terminal route answers through the proxy exactly as the agent does") {
  // The same requests, once to an agent directly and once through the service; status codes
  // and bodies must match once each side's home directory is written as <HOME>.
  test::AgentFixture direct;
  ServiceFixture f;
  struct Call {
    const char* method;
    const char* target;
    const char* body;
  };
  const Call calls[] = {
      {"POST", "/files/write", R"({"path":"a/b.txt","content":"one\ntwo\n"})"},
      {"GET", "/files/read?path=a/b.txt", ""},
      {"GET", "/files/read?path=a/b.txt&start_line=2", ""},
      {"GET", "/files/read?path=missing.txt", ""},
      {"GET", "/files/read", ""},
      {"GET", "/files/read?path=a/b.txt&start_line=0", ""},
      {"GET", "/files/display?path=a/b.txt", ""},
      {"POST", "/files/replace", R"({"path":"a/b.txt","replacements":[{"target":"two","replacement":"2"}]})"},
      {"POST", "/files/replace", R"({"path":"a/b.txt","replacements":[{"target":"zzz","replacement":"2"}]})"},
      {"GET", "/files/grep?query=one&path=a", ""},
      {"GET", "/files/grep?query=one&max_results=0", ""},
      {"POST", "/files/mkdir", R"({"path":"c/d"})"},
      {"POST", "/files/move", R"({"source":"c","destination":"a"})"},
      {"POST", "/files/write", "{not json"},
      {"GET", "/files/write", ""},
      {"DELETE", "/files/delete?path=c", ""},
      {"DELETE", "/files/delete?path=c", ""},
      {"GET", "/execute/nope/status", ""},
      {"POST", "/execute?wait=999", R"({"command":"true"})"},
      {"GET", "/api/config", ""},
      {"GET", "/api/terminals/none", ""},
  };
  auto home_of = [](const std::string& cwd_body) { return json_field(cwd_body, "home"); };
  std::string direct_home = home_of(direct.fetch("GET", "/files/cwd").body);
  std::string proxied_home = home_of(f.fetch("GET", "/files/cwd").body);
  REQUIRE(!direct_home.empty());
  REQUIRE(!proxied_home.empty());
  auto normalized = [](std::string body, const std::string& home) {
    for (std::size_t pos; (pos = body.find(home)) != std::string::npos;) body.replace(pos, home.size(), "<HOME>");
    return body;
  };
  for (const Call& c : calls) {
    auto a = direct.fetch(c.method, c.target, c.body);
    auto b = f.fetch(c.method, c.target, c.body);
    INFO(c.method << " " << c.target);
    CHECK(a.head.status == b.head.status);
    CHECK(normalized(a.body, direct_home) == normalized(b.body, proxied_home));
    CHECK(a.head.headers.get("Content-Type") == b.head.headers.get("Content-Type"));
  }
  direct.finish();
  f.finish();
}

TEST_CASE("service: the tool schema comes from a terminal with authentication removed") {
  ServiceFixture f;
  auto schema = f.fetch("GET", "/openapi.json", {}, std::string(kServiceKey), std::nullopt);
  REQUIRE(schema.head.status == 200);
  auto doc = detail::parse_json(schema.body);
  REQUIRE(doc.has_value());
  CHECK(!doc->HasMember("security"));
  CHECK(!(*doc)["components"].HasMember("securitySchemes"));
  std::set<std::string> ops;
  for (auto& path : (*doc)["paths"].GetObject()) {
    for (auto& op : path.value.GetObject()) {
      CHECK(!op.value.HasMember("security"));
      if (op.value.HasMember("operationId")) ops.insert(op.value["operationId"].GetString());
    }
  }
  CHECK(ops.size() == 12);
  CHECK(ops.count("run_command") == 1);
  CHECK(f.fetch("GET", "/openapi.json", {}, std::nullopt, std::nullopt).head.status == 401);
  f.finish();
}

TEST_CASE("service: 200 parallel first requests of one user create exactly one terminal") {
  ServiceFixture f;
  std::vector<int> statuses;
  std::vector<std::unique_ptr<HttpClient>> clients;
  for (int i = 0; i < 200; ++i) {
    auto& c = clients.emplace_back(HttpClient::create(*f.loop));
    RequestHead head;
    head.target = "/files/cwd";
    head.headers.add("Authorization", std::string("Bearer ") + kServiceKey);
    head.headers.add("X-User-Id", "crowd");
    c->fetch(f.at(), std::move(head), {}, [&](Result<FetchResponse> r) {
      statuses.push_back(r ? r->head.status : -1);
    });
  }
  REQUIRE(test::run_until(*f.loop, [&] { return statuses.size() == 200; }, 60s));
  CHECK(std::count(statuses.begin(), statuses.end(), 200) == 200);
  CHECK(f.terminal_records() == 1);
  auto list = f.fetch("GET", "/api/v1/terminals", {}, std::string(kServiceKey), std::nullopt);
  CHECK(list.body.find(R"("user_id":"crowd")") != std::string::npos);
  clients.clear();
  f.finish();
}

TEST_CASE("service: 100 new users at once are all served") {
  ServiceFixture f;
  std::vector<int> statuses;
  std::vector<std::unique_ptr<HttpClient>> clients;
  for (int i = 0; i < 100; ++i) {
    auto& c = clients.emplace_back(HttpClient::create(*f.loop));
    RequestHead head;
    head.target = "/files/cwd";
    head.headers.add("Authorization", std::string("Bearer ") + kServiceKey);
    head.headers.add("X-User-Id", "user-" + std::to_string(i));
    c->fetch(f.at(), std::move(head), {}, [&](Result<FetchResponse> r) {
      statuses.push_back(r ? r->head.status : -1);
    });
  }
  REQUIRE(test::run_until(*f.loop, [&] { return statuses.size() == 100; }, 90s));
  CHECK(std::count(statuses.begin(), statuses.end(), 200) == 100);
  CHECK(f.terminal_records() == 100);
  clients.clear();
  f.finish();
}

TEST_CASE("service: the PTY WebSocket works through the proxy with the key swapped") {
  ServiceFixture f;
  auto created = f.fetch("POST", "/api/terminals", {}, std::string(kServiceKey), std::string("carol"));
  REQUIRE(created.head.status == 200);
  std::string id = json_field(created.body, "id");
  REQUIRE(!id.empty());
  test::WsClient ws(*f.loop, f.at(), "/api/terminals/" + id + "?user_id=carol");
  REQUIRE(ws.upgraded());
  ws.send_text(std::string(R"({"type":"auth","token":")") + kServiceKey + "\"}");
  ws.send_binary("echo ws-$((6*7))\n");
  CHECK(ws.wait_output("ws-42"));
  ws.send_close(1000);
  ws.wait_disconnected();

  // A wrong token never reaches the terminal.
  auto again = f.fetch("POST", "/api/terminals", {}, std::string(kServiceKey), std::string("carol"));
  std::string id2 = json_field(again.body, "id");
  test::WsClient bad(*f.loop, f.at(), "/api/terminals/" + id2 + "?user_id=carol");
  REQUIRE(bad.upgraded());
  bad.send_text(R"({"type":"auth","token":"not-the-key-0123456789"})");
  REQUIRE(bad.wait_close_frame());
  CHECK(*bad.close_code == 4001);
  // No user id: 4002.
  test::WsClient anon(*f.loop, f.at(), "/api/terminals/" + id2);
  REQUIRE(anon.upgraded());
  anon.send_text(std::string(R"({"type":"auth","token":")") + kServiceKey + "\"}");
  REQUIRE(anon.wait_close_frame());
  CHECK(*anon.close_code == 4002);
  f.finish();
}

TEST_CASE("service: admin routes list stop and refresh terminals") {
  ServiceFixture f;
  REQUIRE(f.fetch("GET", "/files/cwd", {}, std::string(kServiceKey), std::string("dave")).head.status == 200);
  auto status = f.fetch("GET", "/api/v1/status", {}, std::string(kServiceKey), std::nullopt);
  CHECK(status.head.status == 200);
  CHECK(json_field(status.body, "backend") == "local");
  CHECK(json_field(status.body, "active_terminals") == "1");
  auto rows = f.fetch("GET", "/api/v1/terminals", {}, std::string(kServiceKey), std::nullopt);
  CHECK(rows.body.find(R"("user_id":"dave")") != std::string::npos);
  CHECK(rows.body.find("api_key") == std::string::npos);
  auto nobody = f.fetch("POST", "/api/v1/terminals/stop", R"({"user_id":"nobody"})", std::string(kServiceKey), std::nullopt);
  CHECK(nobody.head.status == 404);
  auto stop = f.fetch("POST", "/api/v1/terminals/stop", R"({"user_id":"dave"})", std::string(kServiceKey), std::nullopt);
  CHECK(stop.head.status == 200);
  CHECK(json_field(stop.body, "stopped") == "1");
  // The next request starts it again, with the data kept.
  CHECK(f.fetch("GET", "/files/cwd", {}, std::string(kServiceKey), std::string("dave")).head.status == 200);
  auto refresh = f.fetch("POST", "/api/v1/terminals/refresh", R"({"only_idle":false})", std::string(kServiceKey), std::nullopt);
  CHECK(refresh.head.status == 200);
  CHECK(json_field(refresh.body, "refreshed") == "1");
  f.finish();
}

TEST_CASE("service: a terminal whose agent died is started again by the next request, not answered 502") {
  // Within the orchestrator's status_ttl (2 s) the last confirmation would otherwise be trusted
  // and requests sent to a dead socket.
  ServiceFixture f;
  REQUIRE(f.fetch("POST", "/files/write", R"({"path":"keep.txt","content":"kept"})").head.status == 200);
  auto kill_agents = [&] {
    std::system(("pkill -KILL -f -- '--home " + f.data.path() + "/data/homes' >/dev/null 2>&1").c_str());
    test::run_for(*f.loop, 200ms);
  };
  kill_agents();
  // A small body is kept until the response starts, so the request goes to the new terminal.
  auto posted = f.fetch("POST", "/files/write", R"({"path":"b.txt","content":"x"})");
  CHECK_MESSAGE(posted.head.status == 200, posted.body);
  // A body too large to keep (over 64 KiB) went to the failed attempt and cannot be replayed:
  // 503 saying so, and the terminal is started again meanwhile.
  kill_agents();
  auto big = f.fetch("POST", "/files/write",
                     R"({"path":"big.txt","content":")" + std::string(70 * 1024, 'x') + R"("})");
  CHECK(big.head.status == 503);
  CHECK_MESSAGE(big.body.find("send the request again") != std::string::npos, big.body);
  auto read = f.fetch("GET", "/files/read?path=keep.txt");
  CHECK(read.head.status == 200);
  CHECK(read.body.find("kept") != std::string::npos);
  CHECK(f.fetch("GET", "/files/read?path=b.txt").body.find("x") != std::string::npos);
  // Without a body the request itself goes to the new terminal.
  kill_agents();
  auto again = f.fetch("GET", "/files/read?path=keep.txt");
  CHECK_MESSAGE(again.head.status == 200, again.body);
  CHECK(again.body.find("kept") != std::string::npos);
  f.finish();
}

TEST_CASE("service: Open WebUI unreachable is a 502 and provisions nothing") {
  ServiceFixture f([](Settings& s, Loop&) { s.open_webui_url = "http://127.0.0.1:1"; });
  auto down = f.fetch("GET", "/files/cwd", {}, std::string("token-erin"), std::nullopt);
  CHECK(down.head.status == 502);
  CHECK(f.terminal_records() == 0);
  f.finish();
}

TEST_CASE("service: Open WebUI mode validates user tokens and caches them") {
  // A fake Open WebUI on the service's loop, faithful to GET /api/v1/auths/: it reads the
  // bearer token and answers the user object, or 401.
  int calls = 0;
  ServerPtr fake;
  ServiceFixture f([&](Settings& s, Loop& loop) {
    auto server = Server::create(loop, ServerOptions{Endpoint::tcp("127.0.0.1", 0)}, [&](ServerExchangePtr ex) {
      ++calls;
      auto auth = ex->request().headers.get("Authorization").value_or("");
      if (ex->request().path() == "/api/v1/auths/" && auth == "Bearer token-erin") {
        ex->respond(200, Headers{{"Content-Type", "application/json"}},
                    R"({"id":"erin","email":"erin@example.com","role":"user"})");
      } else {
        ex->respond(401, Headers{{"Content-Type", "application/json"}}, R"({"detail":"Not authenticated"})");
      }
    });
    REQUIRE(server.has_value());
    fake = std::move(server).value();
    s.open_webui_url = "http://127.0.0.1:" + std::to_string(fake->local_endpoint().port);
  });
  auto ok = f.fetch("GET", "/files/cwd", {}, std::string("token-erin"), std::nullopt);
  CHECK(ok.head.status == 200);
  CHECK(calls == 1);
  auto cached = f.fetch("GET", "/files/cwd", {}, std::string("token-erin"), std::string("erin"));
  CHECK(cached.head.status == 200);
  CHECK(calls == 1);  // served from the token cache
  auto mismatch = f.fetch("GET", "/files/cwd", {}, std::string("token-erin"), std::string("mallory"));
  CHECK(mismatch.head.status == 403);
  auto invalid = f.fetch("GET", "/files/cwd", {}, std::string("token-bogus"), std::nullopt);
  CHECK(invalid.head.status == 401);
  // The service key still works alongside, and user tokens never open the admin routes.
  CHECK(f.fetch("GET", "/files/cwd", {}, std::string(kServiceKey), std::string("erin")).head.status == 200);
  CHECK(f.fetch("GET", "/api/v1/terminals", {}, std::string("token-erin"), std::nullopt).head.status == 401);
  CHECK(f.terminal_records() == 1);  // erin's, whichever way she came in
  f.finish();
  fake.reset();
  test::run_for(*f.loop, 20ms);
}

}  // TEST_SUITE
