// The agent's interactive terminals: the /api/terminals REST routes and the PTY WebSocket, with
// real shells on real PTYs over a real socket.

#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "http/websocket.hpp"
#include "json/json.hpp"
#include "support/agent_fixture.hpp"
#include "support/ws_client.hpp"
#include "terminals/agent.hpp"

using namespace terminals;
using namespace std::chrono_literals;

using test::AgentFixture;
using test::kKey;
using test::WsClient;

namespace {

const std::string kAuth = std::string(R"({"type":"auth","token":")") + kKey + R"("})";

struct Created {
  int status = 0;
  std::string id;
  std::string created_at;
  std::int64_t pid = 0;
  std::string body;
};

Created create_terminal(AgentFixture& f, std::optional<std::string> session = std::nullopt) {
  Headers headers;
  if (session) headers.add("X-Session-Id", *session);
  auto res = f.fetch("POST", "/api/terminals", "{}", std::string(kKey), headers);
  Created c;
  c.status = res.head.status;
  c.body = res.body;
  if (c.status == 200) {
    auto doc = detail::parse_json(res.body);
    REQUIRE(doc);
    REQUIRE(doc->IsObject());
    c.id = std::string(detail::json_string(*doc, "id").value_or(""));
    c.created_at = std::string(detail::json_string(*doc, "created_at").value_or(""));
    c.pid = detail::json_int(*doc, "pid").value_or(0);
  }
  return c;
}

// Polls GET /api/terminals/{id} until it answers `status` (session teardown is asynchronous).
bool wait_status(AgentFixture& f, const std::string& id, int status) {
  for (int i = 0; i < 100; ++i) {
    if (f.fetch("GET", "/api/terminals/" + id).head.status == status) return true;
    test::run_for(*f.loop, 50ms);
  }
  return false;
}

// An authenticated socket on a fresh session.
struct Attached {
  std::string id;
  std::unique_ptr<WsClient> ws;
};

Attached attach_new(AgentFixture& f, const std::string& session) {
  Attached a;
  auto c = create_terminal(f, session);
  REQUIRE(c.status == 200);
  a.id = c.id;
  a.ws = std::make_unique<WsClient>(*f.loop, f.agent->local_endpoint(), "/api/terminals/" + c.id);
  REQUIRE(a.ws->upgraded());
  a.ws->send_text(kAuth);
  return a;
}

}  // namespace

TEST_SUITE("integration") {

TEST_CASE("agent terminals: create list get and delete over REST") {
  AgentFixture f;
  auto a = create_terminal(f, std::string("chat-1"));
  REQUIRE(a.status == 200);
  CHECK(a.id == "chat-1");
  CHECK(a.pid > 0);
  CHECK(a.created_at.size() >= 20);
  CHECK(a.created_at.back() == 'Z');

  auto b = create_terminal(f);  // no X-Session-Id: a generated id
  REQUIRE(b.status == 200);
  CHECK(b.id.size() == 8);
  CHECK(b.id.find_first_not_of("0123456789abcdef") == std::string::npos);
  CHECK(b.pid != a.pid);

  auto list = f.fetch("GET", "/api/terminals");
  CHECK(list.head.status == 200);
  auto doc = detail::parse_json(list.body);
  REQUIRE(doc);
  REQUIRE(doc->IsArray());
  REQUIRE(doc->Size() == 2);
  CHECK(detail::json_string((*doc)[0], "id") == "chat-1");  // oldest first
  CHECK(detail::json_string((*doc)[1], "id") == b.id);
  CHECK(detail::json_int((*doc)[1], "pid") == b.pid);

  auto one = f.fetch("GET", "/api/terminals/chat-1");
  CHECK(one.head.status == 200);
  CHECK(one.body == a.body);

  auto del = f.fetch("DELETE", "/api/terminals/chat-1");
  CHECK(del.head.status == 200);
  CHECK(del.body == R"({"status":"deleted"})");
  auto gone = f.fetch("GET", "/api/terminals/chat-1");
  CHECK(gone.head.status == 404);
  CHECK(gone.body == R"({"error":"Session not found"})");
  auto del_again = f.fetch("DELETE", "/api/terminals/chat-1");
  CHECK(del_again.head.status == 404);
  CHECK(del_again.body == R"({"error":"Session not found"})");
  CHECK(f.fetch("GET", "/api/terminals/nope").head.status == 404);

  // A duplicate X-Session-Id replaces the old session (the reference leaked its PTY).
  auto b2 = create_terminal(f, b.id);
  REQUIRE(b2.status == 200);
  CHECK(b2.id == b.id);
  CHECK(b2.pid != b.pid);
  auto list2 = detail::parse_json(f.fetch("GET", "/api/terminals").body);
  REQUIRE(list2);
  REQUIRE(list2->IsArray());
  CHECK(list2->Size() == 1);

  // An id that cannot be addressed in a URL is refused.
  auto bad = create_terminal(f, std::string("a/b"));
  CHECK(bad.status == 400);
  CHECK(bad.body.find(R"({"error":)") == 0);
  f.finish();
}

TEST_CASE("agent terminals: the REST routes need the key") {
  AgentFixture f;
  for (auto [method, target] : {std::pair{"POST", "/api/terminals"}, std::pair{"GET", "/api/terminals"},
                                std::pair{"GET", "/api/terminals/x"},
                                std::pair{"DELETE", "/api/terminals/x"}}) {
    CAPTURE(method);
    CAPTURE(target);
    auto res = f.fetch(method, target, {}, std::nullopt);
    CHECK(res.head.status == 401);
    CHECK(res.body == R"({"detail":"Invalid API key"})");
  }
  CHECK(f.fetch("GET", "/api/terminals").body == "[]");  // nothing was created
  f.finish();
}

TEST_CASE("agent terminals: over the session cap POST answers 429") {
  AgentFixture f([](AgentOptions& o) { o.max_terminals = 2; });
  REQUIRE(create_terminal(f, std::string("one")).status == 200);
  REQUIRE(create_terminal(f, std::string("two")).status == 200);
  auto third = create_terminal(f, std::string("three"));
  CHECK(third.status == 429);
  CHECK(third.body == R"({"error":"Maximum number of terminal sessions (2) reached"})");
  // Replacing an existing id does not count against the cap.
  CHECK(create_terminal(f, std::string("two")).status == 200);
  REQUIRE(f.fetch("DELETE", "/api/terminals/one").head.status == 200);
  CHECK(create_terminal(f, std::string("three")).status == 200);
  f.finish();
}

TEST_CASE("agent terminals: typing binary frames into the shell and reading the output") {
  AgentFixture f;
  auto a = attach_new(f, "typing");
  a.ws->send_binary("echo hello-$((6*7))\n");
  CHECK(a.ws->wait_output("hello-42"));
  // WebSocket pings are answered with pongs carrying the same payload.
  a.ws->send_ping("are-you-there");
  CHECK(a.ws->wait([&] { return !a.ws->pongs.empty(); }));
  if (!a.ws->pongs.empty()) CHECK(a.ws->pongs[0] == "are-you-there");
  CHECK_FALSE(a.ws->close_code.has_value());
  CHECK(a.ws->protocol_error.empty());
  f.finish();
}

TEST_CASE("agent terminals: the shell starts in the session working directory") {
  AgentFixture f;
  test::TempDir dir;
  Headers h{{"X-Session-Id", "chat-cwd"}};
  auto set = f.fetch("POST", "/files/cwd", R"({"path":")" + dir.path() + R"("})", std::string(kKey), h);
  REQUIRE(set.head.status == 200);
  auto a = attach_new(f, "chat-cwd");
  a.ws->send_binary("echo \"at:$(pwd)\"\n");
  CHECK(a.ws->wait_output("at:" + dir.path()));
  f.finish();
}

TEST_CASE("agent terminals: a resize message changes the terminal size") {
  AgentFixture f;
  auto a = attach_new(f, "resize");
  a.ws->send_text(R"({"type":"resize","cols":101,"rows":37})");
  a.ws->send_binary("stty size\n");
  CHECK(a.ws->wait_output("37 101"));
  // Missing values default to 80x24.
  a.ws->send_text(R"({"type":"resize"})");
  a.ws->send_binary("echo size-$(stty size | tr ' ' x)\n");
  CHECK(a.ws->wait_output("size-24x80"));
  f.finish();
}

TEST_CASE("agent terminals: text frames other than resize are ignored") {
  AgentFixture f;
  auto a = attach_new(f, "texts");
  a.ws->send_text("echo typed-$((2+3))\n");  // typed text as a text frame: ignored
  a.ws->send_text(R"({"type":"ping"})");
  a.ws->send_text(R"({"type":"input","data":"echo typed-$((2+3))\n"})");
  a.ws->send_text(R"({"type":"resize","cols":"wide","rows":-1})");
  a.ws->send_binary("echo marker-$((1+1))\n");
  CHECK(a.ws->wait_output("marker-2"));
  CHECK(a.ws->output.find("typed-5") == std::string::npos);
  CHECK(a.ws->output.find("typed-") == std::string::npos);
  CHECK_FALSE(a.ws->close_code.has_value());
  CHECK(a.ws->texts.empty());  // nothing is answered to ignored messages
  f.finish();
}

TEST_CASE("agent terminals: a wrong token closes with 4001 and leaves the session alone") {
  AgentFixture f;
  auto c = create_terminal(f, std::string("guarded"));
  REQUIRE(c.status == 200);
  WsClient ws(*f.loop, f.agent->local_endpoint(), "/api/terminals/guarded");
  REQUIRE(ws.upgraded());
  ws.send_text(R"({"type":"auth","token":"secret-kez"})");
  REQUIRE(ws.wait_close_frame());
  CHECK(*ws.close_code == 4001);
  CHECK(ws.close_reason == "Invalid API key");
  CHECK(ws.output.empty());
  CHECK(ws.wait_disconnected());
  CHECK(f.fetch("GET", "/api/terminals/guarded").head.status == 200);

  // The session can still be driven by a client with the key.
  WsClient good(*f.loop, f.agent->local_endpoint(), "/api/terminals/guarded");
  REQUIRE(good.upgraded());
  good.send_text(kAuth);
  good.send_binary("echo ok-$((40+2))\n");
  CHECK(good.wait_output("ok-42"));
  f.finish();
}

TEST_CASE("agent terminals: a first message that is not auth closes with 4001") {
  AgentFixture f;
  REQUIRE(create_terminal(f, std::string("s")).status == 200);
  for (std::string first : {std::string("binary"), std::string(R"({"type":"resize","cols":80,"rows":24})"),
                            std::string("not json"), std::string(R"({"type":"auth"})")}) {
    CAPTURE(first);
    WsClient ws(*f.loop, f.agent->local_endpoint(), "/api/terminals/s");
    REQUIRE(ws.upgraded());
    if (first == "binary") ws.send_binary(kAuth);  // the right payload in the wrong frame type
    else ws.send_text(first);
    REQUIRE(ws.wait_close_frame());
    CHECK(*ws.close_code == 4001);
    CHECK(ws.close_reason == "Auth timeout or invalid payload");
    CHECK(ws.wait_disconnected());
  }
  f.finish();
}

TEST_CASE("agent terminals: with no_auth any token is accepted") {
  AgentFixture f([](AgentOptions& o) {
    o.api_key.clear();
    o.no_auth = true;
  });
  REQUIRE(create_terminal(f, std::string("open")).status == 200);
  WsClient ws(*f.loop, f.agent->local_endpoint(), "/api/terminals/open");
  REQUIRE(ws.upgraded());
  ws.send_text(R"({"type":"auth","token":"anything"})");
  ws.send_binary("echo free-$((3*3))\n");
  CHECK(ws.wait_output("free-9"));
  f.finish();
}

TEST_CASE("agent terminals: handshake failures answer plain HTTP") {
  AgentFixture f;
  REQUIRE(create_terminal(f, std::string("real")).status == 200);
  // Unknown session: 403 before any upgrade (the reference's 4004 close before accept).
  WsClient unknown(*f.loop, f.agent->local_endpoint(), "/api/terminals/nope");
  CHECK(unknown.status == 403);
  CHECK_FALSE(unknown.upgraded());
  CHECK(unknown.response_head.find(R"({"error":"Session not found"})") != std::string::npos);

  WsClient no_key(*f.loop, f.agent->local_endpoint(), "/api/terminals/real", "");
  CHECK(no_key.status == 400);
  WsClient bad_key(*f.loop, f.agent->local_endpoint(), "/api/terminals/real", "short");
  CHECK(bad_key.status == 400);
  WsClient old_version(*f.loop, f.agent->local_endpoint(), "/api/terminals/real",
                       "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 8\r\n");
  CHECK(old_version.status == 400);
  CHECK(old_version.response_head.find("Sec-WebSocket-Version: 13") != std::string::npos);

  // A dead session is refused like an unknown one.
  auto dead = f.fetch("GET", "/api/terminals/real");
  REQUIRE(dead.head.status == 200);
  REQUIRE(f.fetch("DELETE", "/api/terminals/real").head.status == 200);
  WsClient deleted(*f.loop, f.agent->local_endpoint(), "/api/terminals/real");
  CHECK(deleted.status == 403);

  // None of these touched an existing session.
  REQUIRE(create_terminal(f, std::string("kept")).status == 200);
  WsClient ok(*f.loop, f.agent->local_endpoint(), "/api/terminals/kept");
  CHECK(ok.upgraded());
  f.finish();
}

TEST_CASE("agent terminals: disconnecting destroys the session") {
  AgentFixture f;
  auto a = attach_new(f, "leaving");
  a.ws->send_binary("echo here-$((1+2))\n");
  REQUIRE(a.ws->wait_output("here-3"));
  a.ws->disconnect();
  CHECK(wait_status(f, "leaving", 404));
  CHECK(f.fetch("GET", "/api/terminals").body == "[]");
  f.finish();
}

TEST_CASE("agent terminals: a client close frame is answered and ends the session") {
  AgentFixture f;
  auto a = attach_new(f, "closing");
  a.ws->send_binary("echo up-$((2*2))\n");
  REQUIRE(a.ws->wait_output("up-4"));
  a.ws->send_close(1000);
  REQUIRE(a.ws->wait_close_frame());
  CHECK(*a.ws->close_code == 1000);
  CHECK(a.ws->wait_disconnected());
  CHECK(wait_status(f, "closing", 404));
  f.finish();
}

TEST_CASE("agent terminals: the socket closes with 1000 when the shell exits") {
  AgentFixture f;
  auto a = attach_new(f, "exiting");
  a.ws->send_binary("echo bye-$((5+5)); exit\n");
  REQUIRE(a.ws->wait_close_frame());
  CHECK(*a.ws->close_code == 1000);
  CHECK(a.ws->output.find("bye-10") != std::string::npos);  // the output came first
  CHECK(a.ws->wait_disconnected());
  CHECK(f.fetch("GET", "/api/terminals/exiting").head.status == 404);
  f.finish();
}

TEST_CASE("agent terminals: protocol violations close with 1002 and 1009") {
  AgentFixture f;
  {
    auto a = attach_new(f, "unmasked");
    // A client frame without a mask.
    a.ws->send_raw(detail::ws_encode_frame(detail::WsOpcode::Binary, "echo x\n"));
    REQUIRE(a.ws->wait_close_frame());
    CHECK(*a.ws->close_code == 1002);
    CHECK(a.ws->wait_disconnected());
    CHECK(wait_status(f, "unmasked", 404));
  }
  {
    auto a = attach_new(f, "huge");
    a.ws->send_binary(std::string((1u << 20) + 1, 'x'));
    REQUIRE(a.ws->wait_close_frame());
    CHECK(*a.ws->close_code == 1009);
    CHECK(a.ws->wait_disconnected());
    CHECK(wait_status(f, "huge", 404));
  }
  f.finish();
}

TEST_CASE("agent terminals: a second socket and a replaced session") {
  AgentFixture f;
  auto a = attach_new(f, "shared");
  a.ws->send_binary("echo first-$((1+1))\n");
  REQUIRE(a.ws->wait_output("first-2"));
  // One socket drives a session: a second one is refused after its auth.
  WsClient second(*f.loop, f.agent->local_endpoint(), "/api/terminals/shared");
  REQUIRE(second.upgraded());
  second.send_text(kAuth);
  REQUIRE(second.wait_close_frame());
  CHECK(*second.close_code == 4003);
  CHECK(second.wait_disconnected());
  a.ws->send_binary("echo still-$((2+2))\n");
  CHECK(a.ws->wait_output("still-4"));
  // A new POST with the same id replaces the session: its socket is closed.
  REQUIRE(create_terminal(f, std::string("shared")).status == 200);
  REQUIRE(a.ws->wait_close_frame());
  CHECK(*a.ws->close_code == 1000);
  CHECK(a.ws->close_reason == "Session replaced");
  CHECK(a.ws->wait_disconnected());
  // The new session is not ended by the old socket going away.
  test::run_for(*f.loop, 100ms);
  CHECK(f.fetch("GET", "/api/terminals/shared").head.status == 200);
  f.finish();
}

TEST_CASE("agent terminals: a client that does not read pauses the shell") {
  AgentFixture f;
  auto a = attach_new(f, "slow");
  a.ws->send_binary("echo ready-$((3+4))\n");
  REQUIRE(a.ws->wait_output("ready-7"));
  constexpr std::size_t kBytes = 32u << 20;
  a.ws->pause_reading();
  const std::size_t rss_before = test::current_rss_bytes();
  a.ws->send_binary("head -c " + std::to_string(kBytes) + " /dev/zero | tr '\\0' '\\101'; echo done-$((4+4))\n");
  test::run_for(*f.loop, 1500ms);
  const std::size_t rss_after = test::current_rss_bytes();
  // Without backpressure the agent would queue what the kernel's socket buffers cannot hold
  // (tens of MiB); with it only the stream's high watermark.
#if !defined(__SANITIZE_ADDRESS__)  // ASan's quarantine keeps freed frames resident
  CHECK(rss_after < rss_before + (12u << 20));
#else
  (void)rss_before;
  (void)rss_after;
#endif
  a.ws->resume_reading();
  CHECK(a.ws->wait_output("done-8", 60s));
  std::size_t count = 0;
  for (char c : a.ws->output) count += c == 'A';
  CHECK(count >= kBytes);  // nothing was lost while paused
  f.finish();
}

TEST_CASE("agent terminals: destroying the agent with an open socket") {
  AgentFixture f;
  auto a = attach_new(f, "open");
  a.ws->send_binary("echo alive-$((9*9))\n");
  REQUIRE(a.ws->wait_output("alive-81"));
  f.client.reset();
  f.agent.reset();  // no shutdown first: the socket is still open
  CHECK(a.ws->wait_disconnected());
  CHECK_FALSE(a.ws->close_code.has_value());
  a.ws.reset();
  f.check_no_leaks();
}

}  // TEST_SUITE
