// The agent's HTTP routes, over a real socket with HttpClient.

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

#include "support/agent_fixture.hpp"
#include "terminals/agent.hpp"
#include "terminals/http_client.hpp"

using namespace terminals;
using namespace std::chrono_literals;

using test::AgentFixture;
using test::kKey;

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

TEST_CASE("agent routes: file routes") {
  AgentFixture f;
  const std::string home = f.home.path();

  auto written = f.fetch("POST", "/files/write", R"({"path":"dir/a.txt","content":"one\ntwo\n"})");
  CHECK(written.head.status == 200);
  CHECK(written.body == R"({"path":")" + home + R"(/dir/a.txt","size":8})");

  auto read = f.fetch("GET", "/files/read?path=dir%2Fa.txt&start_line=2");
  CHECK(read.head.status == 200);
  CHECK(read.body == R"({"path":")" + home + R"(/dir/a.txt","total_lines":2,"content":"two\n"})");
  CHECK(f.fetch("GET", "/files/read?path=nope.txt").head.status == 404);
  CHECK(f.fetch("GET", "/files/read").head.status == 422);
  CHECK(f.fetch("GET", "/files/read?path=dir/a.txt&start_line=x").head.status == 422);

  auto list = f.fetch("GET", "/files/list?directory=dir");
  CHECK(list.head.status == 200);
  CHECK(list.body.find(R"({"dir":")" + home + R"(/dir","entries":[{"name":"a.txt","type":"file","size":8,)") == 0);
  auto missing_dir = f.fetch("GET", "/files/list?directory=nope");
  CHECK(missing_dir.head.status == 404);
  CHECK(missing_dir.body == R"({"detail":"Directory not found"})");

  auto display = f.fetch("GET", "/files/display?path=dir/a.txt");
  CHECK(display.body == R"({"path":")" + home + R"(/dir/a.txt","exists":true})");

  auto made = f.fetch("POST", "/files/mkdir", R"({"path":"x/y"})");
  CHECK(made.head.status == 200);
  CHECK(made.body == R"({"path":")" + home + R"(/x/y"})");

  auto moved = f.fetch("POST", "/files/move", R"({"source":"dir/a.txt","destination":"x/b.txt"})");
  CHECK(moved.head.status == 200);
  CHECK(moved.body == R"({"source":")" + home + R"(/dir/a.txt","destination":")" + home + R"(/x/b.txt"})");
  auto collide = f.fetch("POST", "/files/move", R"({"source":"x/b.txt","destination":"x/y"})");
  CHECK(collide.head.status == 409);
  CHECK(collide.body == R"({"detail":"Destination already exists"})");
  CHECK(f.fetch("POST", "/files/move", R"({"source":"gone","destination":"z"})").head.status == 404);

  auto deleted = f.fetch("DELETE", "/files/delete?path=x");
  CHECK(deleted.head.status == 200);
  CHECK(deleted.body == R"({"path":")" + home + R"(/x","type":"directory"})");
  auto delete_missing = f.fetch("DELETE", "/files/delete?path=x");
  CHECK(delete_missing.head.status == 404);
  CHECK(delete_missing.body == R"({"detail":"Path not found"})");

  auto bad_json = f.fetch("POST", "/files/write", "{not json");
  CHECK(bad_json.head.status == 422);
  CHECK(bad_json.body.find(R"({"detail":[{"type":"json_invalid","loc":["body",0])") == 0);
  auto missing_field = f.fetch("POST", "/files/write", R"({"path":"a"})");
  CHECK(missing_field.head.status == 422);
  CHECK(missing_field.body == R"({"detail":[{"type":"missing","loc":["body","content"],)"
                              R"("msg":"Field required","input":{"path":"a"}}]})");
  auto wrong_type = f.fetch("POST", "/files/write", R"({"path":"a","content":7})");
  CHECK(wrong_type.body == R"({"detail":[{"type":"string_type","loc":["body","content"],)"
                           R"("msg":"Input should be a valid string","input":7}]})");
  CHECK(f.fetch("POST", "/files/mkdir", "[1]").head.status == 422);
  CHECK(f.fetch("POST", "/files/mkdir", "").head.status == 422);
  auto missing_query = f.fetch("GET", "/files/read");
  CHECK(missing_query.body == R"({"detail":[{"type":"missing","loc":["query","path"],)"
                              R"("msg":"Field required","input":null}]})");
  auto below = f.fetch("GET", "/files/read?path=a&start_line=0");
  CHECK(below.head.status == 422);
  CHECK(below.body.find(R"("type":"greater_than_equal","loc":["query","start_line"])") !=
        std::string::npos);
  CHECK(below.body.find(R"("ctx":{"ge":1})") != std::string::npos);
  CHECK(f.fetch("GET", "/files/read?path=a&end_line=x").body.find("int_parsing") !=
        std::string::npos);
  auto not_allowed = f.fetch("GET", "/files/write");
  CHECK(not_allowed.head.status == 405);
  CHECK(not_allowed.head.headers.get("Allow") == "POST");
  CHECK(f.fetch("GET", "/files/list", {}, std::nullopt).head.status == 401);

  Headers session{{"X-Session-Id", "chat-1"}};
  auto set = f.fetch("POST", "/files/cwd", R"({"path":"dir"})", std::string(kKey), session);
  CHECK(set.head.status == 200);
  CHECK(set.body == R"({"cwd":")" + home + R"(/dir"})");
  auto cwd = f.fetch("GET", "/files/cwd", {}, std::string(kKey), session);
  CHECK(cwd.head.status == 200);
  CHECK(cwd.body.find(R"({"cwd":")" + home + R"(/dir","home":")" + home + R"(")") == 0);
  auto plain = f.fetch("GET", "/files/cwd");
  CHECK(plain.body.find(R"({"cwd":")" + home + R"(",)") == 0);
  CHECK(f.fetch("POST", "/files/cwd", R"({"path":"nope"})", std::string(kKey), session).head.status == 404);
  f.finish();
}

TEST_CASE("agent routes: no_auth on a unix socket") {
  test::LoopFixture f;
  test::TempDir dir;
  AgentOptions options;
  options.listen = Endpoint::unix_socket(dir.file("agent.sock"));
  options.no_auth = true;
  options.home = dir.path();
  auto created = Agent::create(*f.loop, options);
  REQUIRE(created.has_value());
  AgentPtr agent = std::move(created).value();
  CHECK(agent->local_endpoint() == options.listen);
  auto client = HttpClient::create(*f.loop);
  RequestHead head;
  head.target = "/files/cwd";
  std::optional<Result<FetchResponse>> got;
  client->fetch(agent->local_endpoint(), head, {}, [&](Result<FetchResponse> r) { got.emplace(std::move(r)); });
  REQUIRE(test::run_until(*f.loop, [&] { return got.has_value(); }));
  REQUIRE(got->has_value());
  CHECK((*got)->head.status == 200);
  CHECK((*got)->body.find(R"({"cwd":")" + dir.path() + R"(")") == 0);
  client.reset();
  bool done = false;
  agent->shutdown(1s, [&](Status) { done = true; });
  REQUIRE(test::run_until(*f.loop, [&] { return done; }));
  agent.reset();
  f.check_no_leaks();
}

TEST_CASE("agent routes: CORS preflights and origins for browser clients") {
  AgentFixture f;
  auto preflight = f.fetch("OPTIONS", "/files/list", {}, std::nullopt,
                           Headers{{"Origin", "https://chat.example.com"},
                                   {"Access-Control-Request-Method", "GET"},
                                   {"Access-Control-Request-Headers", "authorization, x-session-id"}});
  CHECK(preflight.head.status == 200);  // answered before authentication
  CHECK(preflight.head.headers.get("Access-Control-Allow-Origin") == "*");
  CHECK(preflight.head.headers.get("Access-Control-Allow-Headers") == "authorization, x-session-id");
  CHECK(preflight.head.headers.get("Access-Control-Allow-Credentials") == std::nullopt);
  auto get = f.fetch("GET", "/files/cwd", {}, std::string(kKey), Headers{{"Origin", "https://chat.example.com"}});
  CHECK(get.head.status == 200);
  CHECK(get.head.headers.get("Access-Control-Allow-Origin") == "*");
  auto denied = f.fetch("GET", "/files/cwd", {}, std::nullopt, Headers{{"Origin", "https://chat.example.com"}});
  CHECK(denied.head.status == 401);  // CORS headers do not replace the key
  CHECK(f.fetch("GET", "/files/cwd").head.headers.get("Access-Control-Allow-Origin") == std::nullopt);
  f.finish();

  AgentFixture g([](AgentOptions& o) { o.cors_allowed_origins = {"https://chat.example.com"}; });
  auto allowed = g.fetch("GET", "/health", {}, std::nullopt, Headers{{"Origin", "https://chat.example.com"}});
  CHECK(allowed.head.headers.get("Access-Control-Allow-Origin") == "https://chat.example.com");
  CHECK(allowed.head.headers.get("Vary") == "Origin");
  auto other = g.fetch("GET", "/health", {}, std::nullopt, Headers{{"Origin", "https://evil.example"}});
  CHECK(other.head.headers.get("Access-Control-Allow-Origin") == std::nullopt);
  auto other_preflight = g.fetch("OPTIONS", "/files/list", {}, std::nullopt,
                                 Headers{{"Origin", "https://evil.example"}, {"Access-Control-Request-Method", "GET"}});
  CHECK(other_preflight.head.status != 200);
  g.finish();
}

}  // TEST_SUITE
