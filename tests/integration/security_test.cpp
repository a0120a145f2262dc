// Security properties of the whole service, attacked from outside: identity spoofing, reaching
// another user's terminal, traversal through every id and path parameter, cap bypass through the
// admin API, and secrets in logs and in users' processes. Everything runs against the real
// service (ServiceFixture) with real agents; docs/security.md states what these tests defend.

#include <doctest/doctest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "json/json.hpp"
#include "support/loop_runner.hpp"
#include "support/raw_client.hpp"
#include "support/service_fixture.hpp"
#include "support/ws_client.hpp"
#include "terminals/log.hpp"
#include "terminals/server.hpp"
#include "util/crypto.hpp"

using namespace terminals;
using namespace std::chrono_literals;
using test::json_field;
using test::kServiceKey;
using test::ServiceFixture;

namespace fs = std::filesystem;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string random_marker() { return detail::random_hex(12).value_or("fallback-marker-0"); }

std::set<std::string> entries(const std::string& dir) {
  std::set<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) out.insert(e.path().filename().string());
  return out;
}

// Every process whose command line contains `needle` as one argument, by pid.
std::vector<pid_t> processes_with_arg(const std::string& needle) {
  std::vector<pid_t> pids;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    std::string cmdline = slurp("/proc/" + name + "/cmdline");
    std::size_t start = 0;
    while (start < cmdline.size()) {
      std::size_t end = cmdline.find('\0', start);
      if (end == std::string::npos) end = cmdline.size();
      if (cmdline.compare(start, end - start, needle) == 0) {
        pids.push_back(static_cast<pid_t>(std::stol(name)));
        break;
      }
      start = end + 1;
    }
  }
  return pids;
}

// Captures the library's log lines for one test; restores the default sink and level after.
struct LogCapture {
  std::mutex mu;
  std::vector<std::string> lines;
  LogCapture() {
    set_log_level(LogLevel::Debug);
    set_log_sink([this](LogLevel level, std::string_view component, std::string_view message) {
      std::lock_guard lock(mu);
      lines.push_back(std::string(log_level_name(level)) + " " + std::string(component) + ": " + std::string(message));
    });
  }
  ~LogCapture() {
    set_log_sink({});
    set_log_level(LogLevel::Info);
  }
  std::string all() {
    std::lock_guard lock(mu);
    std::string out;
    for (const auto& l : lines) out += l + "\n";
    return out;
  }
};

// A fake Open WebUI on the service's loop, faithful to GET /api/v1/auths/: it answers the user
// for "token-<name>" of the names it knows, else 401.
struct FakeOpenWebUI {
  ServerPtr server;
  void start(Loop& loop, Settings& s, std::vector<std::string> users) {
    auto created = Server::create(loop, ServerOptions{Endpoint::tcp("127.0.0.1", 0)},
                                  [users](ServerExchangePtr ex) {
      auto auth = ex->request().headers.get("Authorization").value_or("");
      for (const auto& u : users) {
        if (ex->request().path() == "/api/v1/auths/" && auth == "Bearer token-" + u) {
          return ex->respond(200, Headers{{"Content-Type", "application/json"}},
                             R"({"id":")" + u + R"(","email":")" + u + R"(@example.com","role":"user"})");
        }
      }
      ex->respond(401, Headers{{"Content-Type", "application/json"}}, R"({"detail":"Not authenticated"})");
    });
    REQUIRE(created.has_value());
    server = std::move(created).value();
    s.open_webui_url = "http://127.0.0.1:" + std::to_string(server->local_endpoint().port);
  }
};

// Sends raw request bytes and returns the status code of the answer (0 if none).
int raw_status(Loop& loop, const Endpoint& at, const std::string& request) {
  test::RawClient c(loop, at);
  REQUIRE(c.connected());
  c.send(request);
  c.wait([&] { return c.received.find("\r\n\r\n") != std::string::npos || c.closed; }, 10s);
  if (c.received.size() < 12 || c.received.rfind("HTTP/1.1 ", 0) != 0) return 0;
  return std::stoi(c.received.substr(9, 3));
}

bool have_root() { return ::geteuid() == 0; }

// alice writes a file; bob tries every route to it (files API, commands, archive, moves, both
// path prefixes), by absolute host path and by a relative path out of his own home. Each route
// is first shown to work for alice, so a refusal for bob means something.
void cross_tenant(const std::string& isolation) {
  ServiceFixture f([&](Settings& s, Loop&) { s.isolation = isolation; });
  const std::string secret = random_marker();
  auto alice = [&](std::string method, std::string target, std::string body = {}) {
    return f.fetch(std::move(method), std::move(target), std::move(body), std::string(kServiceKey), std::string("alice"));
  };
  auto bob = [&](std::string method, std::string target, std::string body = {}) {
    return f.fetch(std::move(method), std::move(target), std::move(body), std::string(kServiceKey), std::string("bob"));
  };
  REQUIRE(alice("POST", "/files/write", R"({"path":"secret.txt","content":"alice:)" + secret + R"("})").head.status == 200);
  auto homes = entries(f.settings.data_dir + "/homes");
  REQUIRE(homes.size() == 1);
  const std::string hash = *homes.begin();
  const std::string host_home = f.settings.data_dir + "/homes/" + hash;
  REQUIRE(bob("GET", "/files/cwd").head.status == 200);
  const std::string alice_home = json_field(alice("GET", "/files/cwd").body, "home");
  REQUIRE(!alice_home.empty());

  struct Try {
    std::string method, target, body;
    std::string leak;  // what in a response would show alice's file
  };
  auto tries_for = [&](const std::string& dir) {
    const std::string file = dir + "/secret.txt";
    return std::vector<Try>{
        {"GET", "/files/read?path=" + file, "", secret},
        {"GET", "/files/display?path=" + file, "", R"("exists":true)"},
        {"GET", "/files/view?path=" + file, "", secret},
        {"GET", "/files/list?directory=" + dir, "", "secret.txt"},
        {"GET", "/files/grep?query=alice:&path=" + dir, "", secret},
        {"GET", "/files/glob?pattern=secr*&path=" + dir, "", "secret.txt"},
        {"POST", "/files/archive", R"({"paths":[")" + dir + R"("]})", "secret.txt"},
        {"POST", "/execute?wait=5", R"({"command":"cat )" + file + R"("})", secret},
        {"POST", "/execute?wait=5", R"({"command":"cp )" + file + R"( stolen.txt; cat stolen.txt"})", secret},
    };
  };
  // The control: alice reaches her own file by each route.
  for (const Try& t : tries_for(alice_home)) {
    auto r = alice(t.method, t.target, t.body);
    CHECK_MESSAGE(contains(r.body, t.leak), "alice " << t.method << " " << t.target << ": " << r.head.status);
  }
  // bob: by alice's host path, by his own home's parent, and by alice's in-sandbox path.
  for (const std::string& dir : {host_home, std::string("../") + hash, std::string("../../homes/") + hash, alice_home}) {
    for (const std::string& prefix : {std::string(), std::string("/p/default")}) {
      for (const Try& t : tries_for(dir)) {
        auto r = bob(t.method, prefix + t.target, t.body);
        CHECK_MESSAGE(!contains(r.body, t.leak), "bob " << t.method << " " << prefix << t.target << " got "
                                                        << r.head.status << ": " << r.body.substr(0, 300));
      }
    }
  }
  if (isolation == "sandbox") {
    // Network namespaces: a server alice runs on her loopback is hers alone, also through the
    // agents' /proxy/{port} route.
    const std::string port = std::to_string(20000 + ::getpid() % 20000);
    const bool busybox = ::access("/usr/bin/busybox", X_OK) == 0;
    const bool python = ::access("/usr/bin/python3", X_OK) == 0;
    if (!busybox && !python) {
      MESSAGE("SKIPPED (loopback part): neither busybox nor python3 to serve a file");
    } else {
      std::string server = busybox ? "busybox httpd -f -p 127.0.0.1:" + port + " -h ."
                                   : "python3 -m http.server --bind 127.0.0.1 " + port;
      REQUIRE(alice("POST", "/execute", R"({"command":")" + server + R"("})").head.status == 200);
      bool up = false;
      for (int i = 0; i < 100 && !up; ++i) {
        up = contains(alice("GET", "/proxy/" + port + "/secret.txt").body, secret);
        if (!up) test::run_for(*f.loop, 100ms);
      }
      REQUIRE_MESSAGE(up, "alice's loopback server never answered her own /proxy/" << port);
      auto via_proxy = bob("GET", "/proxy/" + port + "/secret.txt");
      CHECK(via_proxy.head.status != 200);
      CHECK(!contains(via_proxy.body, secret));
      if (busybox) {
        auto fetched = bob("POST", "/execute?wait=5",
                           R"({"command":"busybox wget -T 2 -qO- http://127.0.0.1:)" + port + R"(/secret.txt"})");
        CHECK(!contains(fetched.body, secret));
      }
    }
  }
  // Moving it away or deleting it does not work either: alice's file is intact.
  bob("POST", "/files/move", R"({"source":")" + host_home + R"(/secret.txt","destination":"mine.txt"})");
  bob("DELETE", "/files/delete?path=" + host_home + "/secret.txt");
  bob("POST", "/execute?wait=5", R"({"command":"rm -f )" + host_home + R"(/secret.txt"})");
  CHECK(!contains(bob("GET", "/files/read?path=mine.txt").body, secret));
  CHECK(contains(alice("GET", "/files/read?path=secret.txt").body, secret));
  // Sandboxed agents are not found by finish()'s pattern: stop both through the admin API.
  for (const char* user : {"alice", "bob"}) {
    f.fetch("POST", "/api/v1/terminals/stop", std::string(R"({"user_id":")") + user + "\"}", std::string(kServiceKey),
            std::nullopt);
  }
  f.finish();
}

}  // namespace

TEST_SUITE("integration") {

TEST_CASE("security: the service key counts only as a bearer token in Authorization") {
  ServiceFixture f;
  const std::string key = kServiceKey;
  auto as = [&](Headers h, std::string target = "/files/cwd") {
    return f.fetch("GET", target, {}, std::nullopt, std::string("alice"), std::move(h)).head.status;
  };
  std::string upper = key;
  std::transform(upper.begin(), upper.end(), upper.begin(), ::toupper);
  // Claiming a user without any credential, or with the key anywhere but a bearer token.
  CHECK(as({}) == 401);
  CHECK(as({{"X-Api-Key", key}}) == 401);
  CHECK(as({{"Api-Key", key}}) == 401);
  CHECK(as({{"Cookie", "token=" + key}}) == 401);
  CHECK(as({{"X-Forwarded-User", "alice"}, {"X-Remote-User", "alice"}}) == 401);
  CHECK(as({}, "/files/cwd?api_key=" + key + "&token=" + key) == 401);
  CHECK(as({{"Authorization", key}}) == 401);
  CHECK(as({{"Authorization", "Basic " + key}}) == 401);
  CHECK(as({{"Authorization", "Token " + key}}) == 401);
  CHECK(as({{"Authorization", "Bearer" + key}}) == 401);
  // Near misses of the key itself.
  CHECK(as({{"Authorization", "Bearer " + upper}}) == 401);
  CHECK(as({{"Authorization", "Bearer " + key.substr(0, key.size() - 1)}}) == 401);
  CHECK(as({{"Authorization", "Bearer " + key + "x"}}) == 401);
  CHECK(as({{"Authorization", "Bearer " + key + " " + key}}) == 401);
  CHECK(as({{"Authorization", "Bearer wrong-key-0123456789"}}) == 401);
  // Two Authorization headers, one of them right: refused, never "first wins".
  CHECK(as({{"Authorization", "Bearer wrong-key-0123456789"}, {"Authorization", "Bearer " + key}}) == 401);
  CHECK(as({{"Authorization", "Bearer " + key}, {"Authorization", "Bearer wrong-key-0123456789"}}) == 401);
  CHECK(f.terminal_records() == 0);  // none of that started anything

  // Two users claimed at once are refused, not resolved.
  CHECK(f.fetch("GET", "/files/cwd", {}, key, std::string("alice"), Headers{{"X-User-Id", "bob"}}).head.status == 400);
  CHECK(f.terminal_records() == 0);

  // Header names and the scheme are case-insensitive (RFC 9110): the same caller, the same terminal.
  CHECK(as({{"authorization", "bearer " + key}}) == 200);
  CHECK(f.fetch("GET", "/files/cwd", {}, std::nullopt, std::nullopt,
                Headers{{"AUTHORIZATION", "BEARER " + key}, {"x-user-id", "alice"}}).head.status == 200);
  CHECK(f.terminal_records() == 1);
  // The admin routes take the key the same way and no other.
  for (const char* path : {"/api/v1/status", "/api/v1/terminals", "/api/v1/policies"}) {
    INFO(path);
    CHECK(f.fetch("GET", path, {}, std::nullopt, std::nullopt).head.status == 401);
    CHECK(f.fetch("GET", path, {}, std::nullopt, std::nullopt, Headers{{"X-Api-Key", key}}).head.status == 401);
    CHECK(f.fetch("GET", path, {}, upper, std::nullopt).head.status == 401);
    CHECK(f.fetch("GET", path, {}, key, std::nullopt).head.status == 200);
  }
  for (const char* path : {"/api/v1/terminals/stop", "/api/v1/terminals/refresh"}) {
    INFO(path);
    auto r = f.fetch("POST", path, R"({"user_id":"alice","only_idle":false})", std::nullopt, std::string("alice"));
    CHECK(r.head.status == 401);
  }
  CHECK(f.fetch("PUT", "/api/v1/policies/evil", "{}", std::nullopt, std::string("alice")).head.status == 401);
  CHECK(f.fetch("GET", "/api/v1/policies/evil", {}, key, std::nullopt).head.status == 404);  // not created
  // alice's terminal is still running: the refused stop did nothing.
  auto rows = f.fetch("GET", "/api/v1/terminals", {}, key, std::nullopt);
  CHECK(contains(rows.body, R"("status":"running")"));
  f.finish();
}

TEST_CASE("security: in Open WebUI mode one user's token never reaches another user's terminal") {
  FakeOpenWebUI owui;
  ServiceFixture f([&](Settings& s, Loop& loop) { owui.start(loop, s, {"alice", "bob"}); });
  const std::string secret = random_marker();
  auto as = [&](const std::string& token, std::optional<std::string> claimed, std::string method, std::string target,
                std::string body = {}) {
    return f.fetch(std::move(method), std::move(target), std::move(body), token, std::move(claimed));
  };
  REQUIRE(as("token-alice", std::nullopt, "POST", "/files/write",
             R"({"path":"secret.txt","content":"alice:)" + secret + R"("})").head.status == 200);
  auto own = as("token-alice", std::nullopt, "GET", "/files/read?path=secret.txt");
  REQUIRE(own.head.status == 200);
  REQUIRE(contains(own.body, secret));  // the control: alice reads it

  // bob's token naming alice: 403, on every prefix and spelling, and nothing of alice's comes back.
  for (const char* target : {"/files/read?path=secret.txt", "/p/default/files/read?path=secret.txt"}) {
    INFO(target);
    auto r = as("token-bob", std::string("alice"), "GET", target);
    CHECK(r.head.status == 403);
    CHECK(!contains(r.body, secret));
    auto lower = f.fetch("GET", target, {}, std::nullopt, std::nullopt,
                         Headers{{"authorization", "Bearer token-bob"}, {"x-user-id", "alice"}});
    CHECK(lower.head.status == 403);
  }
  CHECK(as("token-bob", std::string("alice"), "POST", "/execute?wait=5", R"({"command":"cat secret.txt"})").head.status == 403);
  // A user_id in the query means nothing on HTTP routes: bob gets his own terminal.
  auto query = as("token-bob", std::nullopt, "GET", "/files/read?path=secret.txt&user_id=alice");
  CHECK(query.head.status == 404);
  CHECK(!contains(query.body, secret));
  // The service key is not derivable from a user token, and user tokens never open admin routes.
  for (const char* path : {"/api/v1/status", "/api/v1/terminals", "/api/v1/policies"}) {
    CHECK(as("token-alice", std::nullopt, "GET", path).head.status == 401);
  }
  CHECK(as("token-bob", std::nullopt, "POST", "/api/v1/terminals/stop", R"({"user_id":"alice"})").head.status == 401);

  // WebSocket: alice's PTY session, then bob trying it with his token.
  auto created = as("token-alice", std::nullopt, "POST", "/api/terminals");
  REQUIRE(created.head.status == 200);
  std::string session = json_field(created.body, "id");
  REQUIRE(!session.empty());
  {
    test::WsClient ws(*f.loop, f.at(), "/api/terminals/" + session + "?user_id=alice");
    REQUIRE(ws.upgraded());
    ws.send_text(R"({"type":"auth","token":"token-alice"})");
    ws.send_binary("cat secret.txt\n");
    CHECK(ws.wait_output(secret));  // the control
    ws.send_close(1000);
    ws.wait_disconnected();
  }
  // The session may be gone after the close; a fresh one for the attacks.
  created = as("token-alice", std::nullopt, "POST", "/api/terminals");
  session = json_field(created.body, "id");
  REQUIRE(!session.empty());
  {
    // bob's token, alice's user id: refused with 4003 before anything is resolved.
    test::WsClient ws(*f.loop, f.at(), "/api/terminals/" + session + "?user_id=alice");
    REQUIRE(ws.upgraded());
    ws.send_text(R"({"type":"auth","token":"token-bob"})");
    ws.send_binary("cat secret.txt\n");
    REQUIRE(ws.wait_close_frame());
    CHECK(*ws.close_code == 4003);
    CHECK(!contains(ws.output, secret));
  }
  {
    // bob as himself, with alice's session id: the id is looked up in bob's terminal only.
    test::WsClient ws(*f.loop, f.at(), "/api/terminals/" + session + "?user_id=bob");
    REQUIRE(ws.upgraded());
    ws.send_text(R"({"type":"auth","token":"token-bob"})");
    ws.send_binary("cat secret.txt\n");
    REQUIRE(ws.wait_close_frame());
    CHECK(*ws.close_code != 1000);
    CHECK(!contains(ws.output, secret));
  }
  {
    // A forged or absent token with alice's id.
    test::WsClient ws(*f.loop, f.at(), "/api/terminals/" + session + "?user_id=alice");
    REQUIRE(ws.upgraded());
    ws.send_text(R"({"type":"auth","token":"token-mallory"})");
    REQUIRE(ws.wait_close_frame());
    CHECK(*ws.close_code == 4001);
  }
  {
    test::WsClient ws(*f.loop, f.at(), "/api/terminals/" + session + "?user_id=alice");
    REQUIRE(ws.upgraded());
    ws.send_text(R"({"type":"auth"})");
    REQUIRE(ws.wait_close_frame());
    CHECK(*ws.close_code == 4001);
  }
  // alice's session survived all that and still answers alice.
  {
    test::WsClient ws(*f.loop, f.at(), "/api/terminals/" + session + "?user_id=alice");
    REQUIRE(ws.upgraded());
    ws.send_text(R"({"type":"auth","token":"token-alice"})");
    ws.send_binary("echo still-$((40+2))\n");
    CHECK(ws.wait_output("still-42"));
    ws.send_close(1000);
    ws.wait_disconnected();
  }
  CHECK(f.terminal_records() == 2);  // alice's and bob's own, nothing else
  f.finish();
  owui.server.reset();
  test::run_for(*f.loop, 20ms);
}

TEST_CASE("security: traversal in user policy context and session ids is refused and escapes nothing") {
  ServiceFixture f;
  const std::string escape = "sec-escape-" + std::to_string(::getpid());
  const std::string root = f.data.path();
  const std::string data = f.settings.data_dir;
  // A first legitimate request lays out the data directory; later ones must not add to it.
  REQUIRE(f.fetch("GET", "/files/cwd").head.status == 200);
  const auto top = entries(root);
  const auto layout = entries(data);
  const auto homes = entries(data + "/homes");
  const auto policies = entries(data + "/policies");
  REQUIRE(homes.size() == 1);

  // User ids, from the header.
  for (const std::string& bad : {std::string(".."), std::string("../") + escape, std::string("../../") + escape,
                                 std::string("a/../../") + escape, std::string("/etc"), std::string("%2e%2e"),
                                 std::string("..%2f") + escape, std::string("a\\b"), std::string(".hidden"),
                                 std::string("-rf"), std::string(256, 'a'), std::string(4000, 'a')}) {
    auto r = f.fetch("GET", "/files/cwd", {}, std::string(kServiceKey), bad);
    CHECK_MESSAGE(r.head.status == 400, "user id '" << bad.substr(0, 40) << "' got " << r.head.status);
  }
  CHECK(f.fetch("GET", "/files/cwd", {}, std::string(kServiceKey), std::string(255, 'a')).head.status == 200);
  // NUL and control bytes in the header never get that far (the HTTP parser refuses them).
  for (std::string bad : {std::string("a\0b", 3), std::string("a\x01../b"), std::string("a\x7f")}) {
    int status = raw_status(*f.loop, f.at(),
                            "GET /files/cwd HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + std::string(kServiceKey) +
                                "\r\nX-User-Id: " + bad + "\r\nConnection: close\r\n\r\n");
    CHECK_MESSAGE(status == 400, "control byte in X-User-Id got " << status);
  }

  // Policy ids, on /p/ routes (decoded from the path) and on the admin API.
  for (const std::string& bad : {std::string("%2e%2e"), std::string("..%2f..%2f") + escape, std::string(".hidden"),
                                 std::string("a%00b"), std::string("a%5cb"), std::string("a%20b"),
                                 std::string(300, 'p')}) {
    for (const char* rest : {"/files/cwd", "/openapi.json"}) {
      auto r = f.fetch("GET", "/p/" + bad + rest);
      CHECK_MESSAGE(r.head.status == 400, "policy id '" << bad.substr(0, 40) << "'" << rest << " got " << r.head.status);
      CHECK(contains(r.body, "Invalid policy id"));
    }
    auto put = f.fetch("PUT", "/api/v1/policies/" + bad, "{}", std::string(kServiceKey), std::nullopt);
    CHECK_MESSAGE((put.head.status == 422 || put.head.status == 404), "PUT policy '" << bad.substr(0, 40) << "' got "
                                                                                      << put.head.status);
    auto lc = f.fetch("PUT", "/api/v1/policies/" + bad + "/lifecycle", R"({"reset":{"schedule":"@daily"}})",
                      std::string(kServiceKey), std::nullopt);
    CHECK(lc.head.status != 200);
    CHECK(f.fetch("DELETE", "/api/v1/policies/" + bad, {}, std::string(kServiceKey), std::nullopt).head.status == 404);
  }
  // A policy id in a POST body and in admin filters.
  CHECK(f.fetch("POST", "/api/v1/policies", R"({"id":"../)" + escape + R"(","data":{}})", std::string(kServiceKey),
                std::nullopt).head.status == 422);
  CHECK(f.fetch("POST", "/api/v1/terminals/stop", R"({"user_id":"../x","policy_id":"../../x"})",
                std::string(kServiceKey), std::nullopt).head.status == 404);

  // Context ids: free text after "chat:" is allowed but only ever hashed into a path.
  for (const std::string& ctx : {std::string("chat:../../") + escape, std::string("chat:/etc/passwd"),
                                 std::string("automation:..%2f..")}) {
    auto r = f.fetch("GET", "/files/cwd", {}, std::string(kServiceKey), std::string("alice"),
                     Headers{{"X-Terminal-Context-Id", ctx}});
    CHECK(r.head.status == 200);
    std::string home = json_field(r.body, "home");
    CHECK(home.rfind(data + "/homes/", 0) == 0);
    CHECK(!contains(home, ".."));
    CHECK(!contains(home, escape));
  }
  for (const std::string& ctx : {std::string("../") + escape, std::string("chat:") + std::string(300, 'c'),
                                 std::string("project:x")}) {
    auto r = f.fetch("GET", "/files/cwd", {}, std::string(kServiceKey), std::string("alice"),
                     Headers{{"X-Terminal-Context-Id", ctx}});
    CHECK(r.head.status == 400);
  }

  // WebSocket: user ids and context ids from the query, session ids from the path.
  for (const std::string& query : {"user_id=..%2f" + escape, std::string("user_id=%2e%2e"), std::string("user_id=a%00b"),
                                   "user_id=alice&context_id=..%2f" + escape}) {
    test::WsClient ws(*f.loop, f.at(), "/api/terminals/x?" + query);
    REQUIRE(ws.upgraded());
    ws.send_text(std::string(R"({"type":"auth","token":")") + kServiceKey + "\"}");
    REQUIRE(ws.wait_close_frame());
    CHECK_MESSAGE((*ws.close_code == 4002 || *ws.close_code == 4004), query << " closed with " << *ws.close_code);
  }
  for (const std::string& session : {std::string("%2e%2e"), std::string("..%2f..%2fexecute"),
                                     std::string("%2e%2e%2f%2e%2e%2f") + escape, std::string("a%00b")}) {
    test::WsClient ws(*f.loop, f.at(), "/api/terminals/" + session + "?user_id=alice");
    if (!ws.upgraded()) {
      CHECK(ws.status >= 400);  // refused as a plain request
      continue;
    }
    ws.send_text(std::string(R"({"type":"auth","token":")") + kServiceKey + "\"}");
    REQUIRE(ws.wait_close_frame());
    CHECK_MESSAGE(*ws.close_code != 1000, session << " closed with " << *ws.close_code);
    CHECK(ws.output.empty());
  }

  // The filesystem: nothing new beside or above the data directory, one home per valid user.
  CHECK(entries(root) == top);
  CHECK(entries(data) == layout);
  CHECK(entries(data + "/policies") == policies);
  CHECK(entries(data + "/homes").size() == 2);  // alice and the 255-character user
  for (const std::string& dir : {root, data, data + "/homes", data + "/run", fs::path(root).parent_path().string()}) {
    CHECK_MESSAGE(!fs::exists(dir + "/" + escape), dir << "/" << escape << " exists");
  }
  f.finish();
}

TEST_CASE("security: caps hold through the admin API in every spelling and in pod_template sidecars") {
  ServiceFixture f([](Settings& s, Loop&) {
    s.max_cpu = "2";
    s.max_memory = "2Gi";
    s.max_storage = "10Gi";
    s.allowed_images = "ghcr.io/open-webui/*";
  });
  auto put = [&](const std::string& id, const std::string& body) {
    return f.fetch("PUT", "/api/v1/policies/" + id, body, std::string(kServiceKey), std::nullopt);
  };
  // At the caps, in other spellings: accepted (the control).
  for (const char* ok : {R"({"cpu_limit":"2000m"})", R"({"cpu_limit":"2"})", R"({"cpu_limit":"1.999"})",
                         R"({"memory_limit":"2048Mi"})", R"({"memory_limit":"2147483648"})",
                         R"({"memory_limit":"2097152Ki"})", R"({"storage":"10240Mi"})"}) {
    CHECK_MESSAGE(put("ok", ok).head.status == 200, ok);
  }
  // Over the caps, however written: refused, and the stored policy is unchanged.
  const char* over[] = {
      R"({"cpu_limit":"2001m"})", R"({"cpu_limit":"2.001"})", R"({"cpu_limit":"2.5"})", R"({"cpu_limit":3})",
      R"({"cpu_limit":"3000000u"})", R"({"cpu_limit":"0"})", R"({"cpu_limit":"-1"})", R"({"cpu_limit":"1e3"})",
      R"({"cpu_limit":"2k"})", R"({"cpu_limit":" 3"})", R"({"cpu_limit":"NaN"})", R"({"cpu_limit":"inf"})",
      R"({"memory_limit":"2049Mi"})", R"({"memory_limit":"2.0001Gi"})", R"({"memory_limit":"3G"})",
      R"({"memory_limit":"2147483649"})", R"({"memory_limit":"2097153Ki"})", R"({"memory_limit":"0.002Ti"})",
      R"({"memory_limit":"1e10"})", R"({"memory_limit":"1Ei"})", R"({"memory_limit":"99999999999999999999999"})",
      R"({"memory_limit":"0"})", R"({"memory_limit":"-2Gi"})", R"({"memory_limit":"2gi"})",
      R"({"memory_limit":"2Gib"})", R"({"storage":"11Gi"})", R"({"storage":"10241Mi"})", R"({"storage":"11G"})",
      R"({"image":"docker.io/library/ubuntu"})", R"({"image":"ghcr.io/open-webui.evil.example/x"})",
      R"({"env":{"OPEN_TERMINAL_API_KEY":"x"}})", R"({"env":{"OPEN_TERMINAL_API_KEY_FILE":"/etc/shadow"}})",
  };
  for (const char* body : over) {
    auto r = put("ok", body);
    CHECK_MESSAGE((r.head.status == 400 || r.head.status == 422), body << " got " << r.head.status << " " << r.body);
    auto created = f.fetch("POST", "/api/v1/policies", std::string(R"({"id":"new","data":)") + body + "}",
                           std::string(kServiceKey), std::nullopt);
    CHECK_MESSAGE((created.head.status == 400 || created.head.status == 422), "POST " << body);
  }
  CHECK(json_field(f.fetch("GET", "/api/v1/policies/ok", {}, std::string(kServiceKey), std::nullopt).body, "data") ==
        R"({"storage":"10240Mi"})");
  CHECK(f.fetch("GET", "/api/v1/policies/new", {}, std::string(kServiceKey), std::nullopt).head.status == 404);

  // pod_template: sidecars and init containers cannot carry what the terminal may not.
  auto pod = [](const std::string& containers, const std::string& extra = "") {
    return std::string(R"({"pod_template":{"spec":{"containers":[)") + containers + "]" + extra + "}}}";
  };
  const std::string side_ok = R"({"name":"side","image":"ghcr.io/open-webui/side","resources":{"limits":{"cpu":"500m","memory":"512Mi","ephemeral-storage":"1Gi"}}})";
  auto pods_ok = put("pods", pod(side_ok).insert(1, R"("cpu_limit":"1500m","memory_limit":"1Gi","storage":"1Gi",)"));
  CHECK_MESSAGE(pods_ok.head.status == 200, pods_ok.body);
  const std::string bad_pods[] = {
      // a sidecar over a cap on its own, in limits or in requests
      pod(R"({"name":"side","resources":{"limits":{"cpu":"3","memory":"1Mi","ephemeral-storage":"1Mi"}}})"),
      pod(R"({"name":"side","resources":{"limits":{"cpu":"1","memory":"1Mi","ephemeral-storage":"1Mi"},"requests":{"cpu":"2500m"}}})"),
      pod(R"({"name":"side","resources":{"limits":{"cpu":"1","memory":"3G","ephemeral-storage":"1Mi"}}})"),
      // a sidecar without a limit would be unbounded
      pod(R"({"name":"side","resources":{"limits":{"memory":"1Mi","ephemeral-storage":"1Mi"}}})"),
      pod(R"({"name":"side"})"),
      // together over the cap: sidecar 1500m + terminal 1 core
      pod(R"({"name":"side","resources":{"limits":{"cpu":"1500m","memory":"1Mi","ephemeral-storage":"1Mi"}}})")
          .insert(1, R"("cpu_limit":"1",)"),
      // the terminal's own container over the cap
      pod(R"({"name":"open-terminal","resources":{"limits":{"cpu":"4"}}})"),
      // an init container over a cap, an image outside the allow-list
      pod(R"({"name":"open-terminal"})", R"(,"initContainers":[{"name":"i","resources":{"limits":{"memory":"3Gi"}}}])"),
      pod(R"({"name":"side","image":"docker.io/evil","resources":{"limits":{"cpu":"1m","memory":"1Mi","ephemeral-storage":"1Mi"}}})"),
  };
  for (const std::string& body : bad_pods) {
    auto r = put("pods", body);
    CHECK_MESSAGE((r.head.status == 400 || r.head.status == 422), body << " got " << r.head.status);
    CHECK_MESSAGE(!contains(r.body, "not valid JSON"), r.body);  // refused for what it asks, not its syntax
    // The camelCase spelling is checked the same way.
    std::string camel = body;
    camel.replace(camel.find("pod_template"), 12, "podTemplate");
    CHECK_MESSAGE(put("pods", camel).head.status != 200, camel);
  }
  CHECK(json_field(f.fetch("GET", "/api/v1/policies/pods", {}, std::string(kServiceKey), std::nullopt).body, "revision") == "1");

  // Caps tightened after a policy was stored apply when its terminals start.
  REQUIRE(put("big", R"({"cpu_limit":"2"})").head.status == 200);
  f.finish();
  f.settings.max_cpu = "1";
  f.start_service();
  auto started = f.fetch("GET", "/p/big/files/cwd");
  CHECK_MESSAGE(started.head.status != 200, started.body);
  CHECK(contains(started.body, "TERMINALS_MAX_CPU"));
  CHECK(f.terminal_records() == 0);
  f.finish();
}

TEST_CASE("security: keys appear in no log line and in no environment of a user's process") {
  LogCapture logs;
  ServiceFixture f;
  const std::string wrong = "presented-but-wrong-" + random_marker();
  const std::string tag = "31." + std::to_string(::getpid() % 1000 + 1000);
  // A refused credential, a provision, files, a command left running, and a PTY shell.
  CHECK(f.fetch("GET", "/files/cwd", {}, wrong, std::string("alice")).head.status == 401);
  REQUIRE(f.fetch("POST", "/files/write", R"({"path":"a.txt","content":"x"})").head.status == 200);
  REQUIRE(f.fetch("POST", "/execute?wait=5", R"({"command":"echo done"})").head.status == 200);
  auto bg = f.fetch("POST", "/execute", R"({"command":"sleep )" + tag + R"("})");
  REQUIRE(bg.head.status == 200);
  auto pty = f.fetch("POST", "/api/terminals");
  REQUIRE(pty.head.status == 200);
  test::WsClient ws(*f.loop, f.at(), "/api/terminals/" + json_field(pty.body, "id") + "?user_id=alice");
  REQUIRE(ws.upgraded());
  ws.send_text(std::string(R"({"type":"auth","token":")") + kServiceKey + "\"}");
  ws.send_binary("sleep 2" + tag + " & echo started-$((1+1))\n");
  CHECK(ws.wait_output("started-2"));

  // The terminal's own key, from its 0600 key file in its 0700 runtime directory.
  auto runs = entries(f.settings.data_dir + "/run");
  REQUIRE(runs.size() == 1);
  const std::string run_dir = f.settings.data_dir + "/run/" + *runs.begin();
  const std::string agent_key = slurp(run_dir + "/key");
  REQUIRE(agent_key.size() >= 32);
  struct stat st {};
  REQUIRE(::stat((run_dir + "/key").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  REQUIRE(::stat(run_dir.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);

  // The user's processes: the command's and the PTY shell's child.
  std::vector<pid_t> users;
  REQUIRE(test::run_until(*f.loop, [&] {
    users = processes_with_arg(tag);
    auto more = processes_with_arg("2" + tag);
    users.insert(users.end(), more.begin(), more.end());
    return users.size() >= 2;
  }, 10s));
  for (pid_t pid : users) {
    std::string env = slurp("/proc/" + std::to_string(pid) + "/environ");
    INFO("pid " << pid);
    REQUIRE(!env.empty());  // readable: the check below means something
    CHECK(contains(env, "HOME="));
    CHECK(!contains(env, agent_key));
    CHECK(!contains(env, kServiceKey));
    CHECK(!contains(env, "OPEN_TERMINAL_API_KEY"));  // neither the key nor the key file's path
    CHECK(!contains(env, "TERMINALS_"));
  }
  // The agent itself holds the path of its key file, not the key.
  auto record = detail::parse_json(slurp(f.settings.data_dir + "/terminals/" + *runs.begin() + ".json"));
  REQUIRE(record.has_value());
  pid_t agent = static_cast<pid_t>(detail::json_int(*record, "pid").value_or(0));
  REQUIRE(agent > 0);
  std::string agent_env = slurp("/proc/" + std::to_string(agent) + "/environ");
  REQUIRE(!agent_env.empty());
  CHECK(contains(agent_env, "OPEN_TERMINAL_API_KEY_FILE=" + run_dir + "/key"));
  CHECK(!contains(agent_env, agent_key));
  CHECK(!contains(agent_env, kServiceKey));
  CHECK(!contains(slurp("/proc/" + std::to_string(agent) + "/cmdline"), agent_key));

  ws.send_close(1000);
  ws.wait_disconnected();
  for (pid_t pid : users) ::kill(pid, SIGKILL);
  f.finish();
  // Logs: the service's lines (a control: there are some), the agent's own log, the audit log.
  std::string lines = logs.all();
  CHECK(!lines.empty());
  std::string agent_log = slurp(run_dir + "/agent.log");
  std::string audit = slurp(f.settings.data_dir + "/audit.log");
  CHECK(contains(audit, "terminal."));
  for (const std::string& secret : {std::string(kServiceKey), agent_key, wrong}) {
    CHECK_MESSAGE(!contains(lines, secret), "a key in the service log:\n" << lines);
    CHECK(!contains(agent_log, secret));
    CHECK(!contains(audit, secret));
  }
}

TEST_CASE("security: with isolation user a file of alice is unreadable for bob by any route") {
  if (!have_root()) {
    MESSAGE("SKIPPED: isolation user needs root (CI runs as root)");
    return;
  }
  cross_tenant("user");
}

TEST_CASE("security: with isolation sandbox a file of alice is unreadable for bob by any route") {
  if (!have_root() || ::access("/usr/bin/bwrap", X_OK) != 0) {
    MESSAGE("SKIPPED: isolation sandbox needs root and bubblewrap (CI has both)");
    return;
  }
  cross_tenant("sandbox");
}

}  // TEST_SUITE
