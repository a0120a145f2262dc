// The terminal proxy (src/proxy/): HTTP and WebSocket forwarding to a real agent, or to a small
// test server where what arrives upstream must be inspected. Real sockets throughout.

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "json/json.hpp"
#include "proxy/terminal_proxy.hpp"
#include "support/agent_fixture.hpp"
#include "support/loop_runner.hpp"
#include "support/raw_client.hpp"
#include "support/ws_client.hpp"
#include "terminals/agent.hpp"
#include "terminals/http_client.hpp"
#include "terminals/server.hpp"

using namespace terminals;
using namespace std::chrono_literals;
using terminals::detail::ForwardOptions;
using terminals::detail::ProxyOptions;
using terminals::detail::ProxyTarget;
using terminals::detail::TerminalProxy;

namespace {

// A server on loopback whose handler the test sets.
struct TestServer {
  std::function<void(ServerExchangePtr)> handler;
  ServerPtr server;
  explicit TestServer(Loop& loop, Endpoint listen = Endpoint::tcp("127.0.0.1", 0)) {
    ServerOptions o;
    o.listen = std::move(listen);
    auto s = Server::create(loop, o, [this](ServerExchangePtr ex) { handler(std::move(ex)); });
    REQUIRE(s.has_value());
    server = std::move(s).value();
  }
  Endpoint endpoint() const { return server->local_endpoint(); }
};

Result<FetchResponse> fetch_now(Loop& loop, HttpClient& client, const Endpoint& ep, std::string method,
                                std::string target, Headers headers = {}, std::string body = {}) {
  RequestHead head;
  head.method = std::move(method);
  head.target = std::move(target);
  head.headers = std::move(headers);
  std::optional<Result<FetchResponse>> got;
  client.fetch(ep, std::move(head), std::move(body), [&](Result<FetchResponse> r) { got.emplace(std::move(r)); });
  REQUIRE(test::run_until(loop, [&] { return got.has_value(); }, 30s));
  return std::move(*got);
}

std::string detail_of(const std::string& body) {
  auto doc = detail::parse_json(body);
  if (!doc || !doc->IsObject()) return "<not json: " + body + ">";
  return std::string(detail::json_string(*doc, "error").value_or("<no error field>"));
}

// Writes `total` bytes into a response, as fast as the connection drains.
struct Producer {
  ServerExchangePtr ex;
  std::uint64_t left = 0;
  std::uint64_t produced = 0;
  std::string chunk = std::string(64 * 1024, 'x');
  void start(ServerExchangePtr e, std::uint64_t total) {
    ex = std::move(e);
    left = total;
    ResponseHead head;
    head.headers.add("Content-Length", std::to_string(total));
    ex->write_head(head);
    ex->set_drain_handler([this] { pump(); });
    pump();
  }
  void pump() {
    while (left > 0) {
      const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(left, chunk.size()));
      left -= n;
      produced += n;
      if (!ex->write(std::string_view(chunk.data(), n))) return;
    }
    ex->end();
  }
};

// A port nothing listens on (bound, read, closed).
std::uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0);
  socklen_t len = sizeof(sa);
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) == 0);
  ::close(fd);
  return ntohs(sa.sin_port);
}

// The agent's terminals run $SHELL. The host's interactive bash may spend seconds in its rc
// files (pyenv and the like), which has nothing to do with the proxy: these tests use a shell
// that reads none. Restored afterwards, for runs of several cases in one process.
struct PlainShell {
  std::optional<std::string> saved;
  PlainShell() {
    if (const char* s = ::getenv("SHELL")) saved = s;
    ::setenv("SHELL", "/bin/sh", 1);
  }
  ~PlainShell() {
    if (saved) ::setenv("SHELL", saved->c_str(), 1);
    else ::unsetenv("SHELL");
  }
  PlainShell(const PlainShell&) = delete;
  PlainShell& operator=(const PlainShell&) = delete;
};

std::string create_terminal(test::AgentFixture& f) {
  auto res = f.fetch("POST", "/api/terminals", "{}");
  REQUIRE(res.head.status == 200);
  auto doc = detail::parse_json(res.body);
  REQUIRE(doc.has_value());
  return std::string(detail::json_string(*doc, "id").value_or(""));
}

constexpr const char* kUserToken = "user-token";

TerminalProxy::WsOptions ws_options(int* opened = nullptr, int* closed = nullptr) {
  TerminalProxy::WsOptions o;
  o.check_client_token = [](std::string token, MoveOnlyFunction<void(bool)> done) {
    done(token == kUserToken);
  };
  if (opened) o.on_open = [opened] { ++*opened; };
  if (closed) o.on_close = [closed] { ++*closed; };
  return o;
}

std::string auth_message(const std::string& token) {
  return R"({"type":"auth","token":")" + token + R"("})";
}

}  // namespace

TEST_SUITE("integration") {

TEST_CASE("proxy: GET and POST reach the agent with the terminal's key") {
  test::AgentFixture f;
  auto proxy = TerminalProxy::create(*f.loop);
  TestServer front(*f.loop);
  int activity = 0;
  front.handler = [&](ServerExchangePtr ex) {
    ForwardOptions o;
    o.on_activity = [&activity] { ++activity; };
    proxy->forward(std::move(ex), ProxyTarget{f.agent->local_endpoint(), test::kKey}, std::move(o));
  };
  // Directly, the user's credential is refused by the agent...
  auto direct = f.fetch("GET", "/files/list?directory=.", {}, std::string("user-token"));
  CHECK(direct.head.status == 401);
  // ...through the proxy it is replaced by the terminal's key.
  auto r = fetch_now(*f.loop, *f.client, front.endpoint(), "POST", "/files/write",
                     Headers{{"Authorization", "Bearer user-token"}, {"Content-Type", "application/json"}},
                     R"({"path":"hello.txt","content":"hi there"})");
  REQUIRE(r.has_value());
  CHECK(r->head.status == 200);
  auto list = fetch_now(*f.loop, *f.client, front.endpoint(), "GET", "/files/list?directory=.");
  REQUIRE(list.has_value());
  CHECK(list->head.status == 200);
  CHECK(list->body.find("hello.txt") != std::string::npos);
  auto read = fetch_now(*f.loop, *f.client, front.endpoint(), "GET", "/files/read?path=hello.txt");
  REQUIRE(read.has_value());
  CHECK(read->head.status == 200);
  CHECK(read->body.find("hi there") != std::string::npos);
  CHECK(activity >= 1);
  front.server.reset();
  proxy.reset();
  f.finish();
}

TEST_CASE("proxy: request and response headers are rewritten") {
  test::LoopFixture f;
  std::optional<RequestHead> seen;
  TestServer upstream(*f.loop);
  upstream.handler = [&](ServerExchangePtr ex) {
    seen = ex->request();
    ex->respond(201, Headers{{"X-Reply", "yes"}, {"Connection", "X-Hop"}, {"X-Hop", "1"},
                             {"Set-Cookie", "a=1"}, {"Set-Cookie", "b=2"}},
                "created");
  };
  auto proxy = TerminalProxy::create(*f.loop);
  TestServer front(*f.loop);
  front.handler = [&](ServerExchangePtr ex) {
    ForwardOptions o;
    o.upstream_target = "/inner/path?x=1%202";
    o.forwarded_prefix = "/p/dev";
    proxy->forward(std::move(ex), ProxyTarget{upstream.endpoint(), "terminal-key"}, std::move(o));
  };
  auto client = HttpClient::create(*f.loop);
  auto r = fetch_now(*f.loop, *client, front.endpoint(), "GET", "/p/dev/inner/path?x=1%202",
                     Headers{{"Authorization", "Bearer user-token"},
                             {"X-User-Id", "alice"},
                             {"X-Terminal-Context-Id", "chat-1"},
                             {"X-Session-Id", "sess-9"},
                             {"Cookie", "token=owui-session"},
                             {"Connection", "X-Private"},
                             {"X-Private", "secret"},
                             {"Proxy-Authorization", "Basic abc"},
                             {"X-Forwarded-Proto", "https"},
                             {"Accept", "application/json"}});
  REQUIRE(r.has_value());
  CHECK(r->head.status == 201);
  CHECK(r->body == "created");
  CHECK(r->head.headers.get("X-Reply") == std::optional<std::string_view>("yes"));
  CHECK(r->head.headers.count("Set-Cookie") == 2);
  REQUIRE(seen.has_value());
  CHECK(seen->target == "/inner/path?x=1%202");
  const Headers& h = seen->headers;
  CHECK(h.get("Authorization") == std::optional<std::string_view>("Bearer terminal-key"));
  CHECK(h.count("Authorization") == 1);
  CHECK_FALSE(h.has("X-User-Id"));
  CHECK_FALSE(h.has("X-Terminal-Context-Id"));
  CHECK_FALSE(h.has("Cookie"));
  CHECK_FALSE(h.has("X-Private"));
  CHECK_FALSE(h.has("Proxy-Authorization"));
  CHECK(h.get("X-Session-Id") == std::optional<std::string_view>("sess-9"));
  CHECK(h.get("Accept") == std::optional<std::string_view>("application/json"));
  CHECK(h.get("X-Forwarded-For") == std::optional<std::string_view>("127.0.0.1"));
  CHECK(h.get("X-Forwarded-Proto") == std::optional<std::string_view>("https"));
  CHECK(h.get("X-Forwarded-Prefix") == std::optional<std::string_view>("/p/dev"));
  CHECK(h.has("X-Forwarded-Host"));
  client.reset();
  front.server.reset();
  proxy.reset();
  upstream.server.reset();
  f.check_no_leaks();
}

TEST_CASE("proxy: 64 MiB upload and download stream with bounded memory") {
  test::LoopFixture f;
  constexpr std::uint64_t kTotal = 64ull << 20;
  std::uint64_t uploaded = 0;
  Producer producer;
  TestServer upstream(*f.loop);
  upstream.handler = [&](ServerExchangePtr ex) {
    if (ex->request().method == "GET") return producer.start(ex, kTotal);
    ex->read_body(BodyHandlers{[&](std::string_view d) { uploaded += d.size(); },
                               [ex, &uploaded](Status) { ex->respond(200, {}, std::to_string(uploaded)); }});
  };
  auto proxy = TerminalProxy::create(*f.loop);
  TestServer front(*f.loop);
  front.handler = [&](ServerExchangePtr ex) {
    proxy->forward(std::move(ex), ProxyTarget{upstream.endpoint(), "k"}, ForwardOptions{});
  };
  auto client = HttpClient::create(*f.loop);
  const std::size_t baseline = test::current_rss_bytes();
  std::size_t peak = baseline;

  // Upload: written as fast as the proxy drains it.
  {
    RequestHead head;
    head.method = "POST";
    head.target = "/upload";
    head.headers.add("Content-Length", std::to_string(kTotal));
    std::optional<Result<ResponseHead>> got;
    std::string reply;
    bool body_done = false;
    auto ex = client->request(front.endpoint(), std::move(head), [&](Result<ResponseHead> r) {
      got.emplace(std::move(r));
    });
    std::uint64_t sent = 0;
    const std::string chunk(64 * 1024, 'u');
    std::function<void()> pump = [&] {
      while (sent < kTotal) {
        sent += chunk.size();
        if (sent % (4u << 20) == 0) peak = std::max(peak, test::current_rss_bytes());
        if (!ex->write(chunk)) return;
      }
      ex->end();
    };
    ex->set_drain_handler([&] { pump(); });
    pump();
    REQUIRE(test::run_until(*f.loop, [&] { return got.has_value(); }, 60s));
    REQUIRE(got->has_value());
    CHECK((*got)->status == 200);
    ex->read_body(BodyHandlers{[&](std::string_view d) { reply += d; }, [&](Status) { body_done = true; }});
    REQUIRE(test::run_until(*f.loop, [&] { return body_done; }));
    CHECK(reply == std::to_string(kTotal));
    CHECK(uploaded == kTotal);
  }
  // Download.
  {
    RequestHead head;
    head.target = "/download";
    std::optional<Result<ResponseHead>> got;
    std::uint64_t received = 0;
    std::optional<Status> end;
    auto ex = client->request(front.endpoint(), std::move(head), [&](Result<ResponseHead> r) {
      got.emplace(std::move(r));
    });
    REQUIRE(test::run_until(*f.loop, [&] { return got.has_value(); }));
    REQUIRE(got->has_value());
    CHECK((*got)->status == 200);
    ex->read_body(BodyHandlers{[&](std::string_view d) {
                                 const std::uint64_t before = received;
                                 received += d.size();
                                 if (before / (4u << 20) != received / (4u << 20)) {
                                   peak = std::max(peak, test::current_rss_bytes());
                                 }
                               },
                               [&](Status s) { end.emplace(std::move(s)); }});
    REQUIRE(test::run_until(*f.loop, [&] { return end.has_value(); }, 60s));
    CHECK(end->has_value());
    CHECK(received == kTotal);
  }
  MESSAGE("RSS growth during 2 x 64 MiB through the proxy: " << (peak - baseline) / 1024 << " KiB");
#if !defined(__SANITIZE_ADDRESS__)  // ASan's quarantine keeps freed buffers resident
  CHECK(peak - baseline < (32u << 20));
#endif
  client.reset();
  front.server.reset();
  proxy.reset();
  upstream.server.reset();
  f.check_no_leaks();
}

TEST_CASE("proxy: a client that stops reading holds the upstream back") {
  test::LoopFixture f;
  constexpr std::uint64_t kTotal = 256ull << 20;
  Producer producer;
  bool upstream_aborted = false;
  TestServer upstream(*f.loop);
  upstream.handler = [&](ServerExchangePtr ex) {
    ex->on_abort([&] { upstream_aborted = true; });
    producer.start(ex, kTotal);
  };
  auto proxy = TerminalProxy::create(*f.loop);
  TestServer front(*f.loop);
  front.handler = [&](ServerExchangePtr ex) {
    proxy->forward(std::move(ex), ProxyTarget{upstream.endpoint(), "k"}, ForwardOptions{});
  };
  const std::size_t baseline = test::current_rss_bytes();
  test::RawClient c(*f.loop, front.endpoint(), /*start_reading=*/false);
  REQUIRE(c.connected());
  c.send("GET /download HTTP/1.1\r\nHost: x\r\n\r\n");
  test::run_for(*f.loop, 1500ms);
  const std::size_t growth = test::current_rss_bytes() - std::min(baseline, test::current_rss_bytes());
  MESSAGE("produced while the client did not read: " << producer.produced / 1024
          << " KiB; RSS growth " << growth / 1024 << " KiB");
  // Without backpressure the proxy would have read it all into memory within this time.
  CHECK(producer.produced < (64u << 20));
#if !defined(__SANITIZE_ADDRESS__)
  CHECK(growth < (24u << 20));
#endif
  // The client leaving cancels the upstream exchange.
  c.stream->close();
  CHECK(test::run_until(*f.loop, [&] { return upstream_aborted; }));
  front.server.reset();
  proxy.reset();
  upstream.server.reset();
  f.check_no_leaks();
}

TEST_CASE("proxy: status polls that arrive together reach the agent batched, other requests one by one") {
  test::LoopFixture f;
  TestServer upstream(*f.loop);
  std::vector<std::string> peers;  // the proxy-side address of each request's connection
  upstream.handler = [&](ServerExchangePtr ex) {
    peers.push_back(ex->peer());
    std::string target = ex->request().target;
    ex->respond(200, Headers{{"Content-Type", "text/plain"}}, "answer to " + target);
  };
  auto proxy = TerminalProxy::create(*f.loop);
  TestServer front(*f.loop);
  front.handler = [&](ServerExchangePtr ex) {
    proxy->forward(std::move(ex), ProxyTarget{upstream.endpoint(), "k"}, ForwardOptions{});
  };
  // One request first, so that a kept connection waits in the proxy's pool.
  test::RawClient first(*f.loop, front.endpoint());
  REQUIRE(first.connected());
  first.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
  REQUIRE(first.wait_contains("answer to /health"));
  // Then many clients at once: their requests reach the proxy in one loop iteration.
  auto burst = [&](const std::string& target) {
    peers.clear();
    std::vector<std::unique_ptr<test::RawClient>> clients;
    for (int i = 0; i < 10; ++i) {
      clients.push_back(std::make_unique<test::RawClient>(*f.loop, front.endpoint()));
      REQUIRE(clients.back()->connected());
    }
    for (auto& c : clients) c->send("GET " + target + " HTTP/1.1\r\nHost: x\r\n\r\n");
    for (auto& c : clients) {
      REQUIRE(c->wait_contains("answer to " + target));
      CHECK(c->received.find("HTTP/1.1 200") == 0);
    }
    std::sort(peers.begin(), peers.end());
    return std::unique(peers.begin(), peers.end()) - peers.begin();
  };
  SUBCASE("a status poll: one connection, one write") { CHECK(burst("/files/cwd") == 1); }
  SUBCASE("a long poll: not batched") { CHECK(burst("/execute/abc/status?wait=5") > 1); }
  SUBCASE("a file read: not batched") { CHECK(burst("/files/read?path=a") > 1); }
  SUBCASE("an execute status without wait: batched") {
    CHECK(burst("/execute/abc/status?tail=5") == 1);
  }
  front.server.reset();
  proxy.reset();
  upstream.server.reset();
  f.check_no_leaks();
}

TEST_CASE("proxy: a client that disconnects before the answer cancels the upstream exchange") {
  test::LoopFixture f;
  ServerExchangePtr held;
  bool upstream_aborted = false;
  TestServer upstream(*f.loop);
  upstream.handler = [&](ServerExchangePtr ex) {
    ex->on_abort([&] { upstream_aborted = true; });
    held = std::move(ex);  // never answered
  };
  auto proxy = TerminalProxy::create(*f.loop);
  TestServer front(*f.loop);
  front.handler = [&](ServerExchangePtr ex) {
    proxy->forward(std::move(ex), ProxyTarget{upstream.endpoint(), "k"}, ForwardOptions{});
  };
  test::RawClient c(*f.loop, front.endpoint());
  REQUIRE(c.connected());
  c.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
  REQUIRE(test::run_until(*f.loop, [&] { return held != nullptr; }));
  CHECK_FALSE(upstream_aborted);
  c.stream->close();
  CHECK(test::run_until(*f.loop, [&] { return upstream_aborted; }));
  held.reset();
  front.server.reset();
  proxy.reset();
  upstream.server.reset();
  f.check_no_leaks();
}

TEST_CASE("proxy: refused and missing sockets answer 502") {
  test::LoopFixture f;
  test::TempDir dir;
  auto proxy = TerminalProxy::create(*f.loop);
  Endpoint target;
  TestServer front(*f.loop);
  front.handler = [&](ServerExchangePtr ex) {
    proxy->forward(std::move(ex), ProxyTarget{target, "terminal-key-secret"}, ForwardOptions{});
  };
  auto client = HttpClient::create(*f.loop);
  target = Endpoint::unix_socket(dir.file("absent.sock"));
  auto missing = fetch_now(*f.loop, *client, front.endpoint(), "GET", "/health");
  REQUIRE(missing.has_value());
  CHECK(missing->head.status == 502);
  CHECK(missing->head.headers.get("Content-Type") == std::optional<std::string_view>("application/json"));
  CHECK(detail_of(missing->body).find("unix socket") != std::string::npos);
  CHECK(missing->body.find("terminal-key-secret") == std::string::npos);
  CHECK(missing->body.find(dir.path()) == std::string::npos);
  target = Endpoint::tcp("127.0.0.1", free_port());
  auto refused = fetch_now(*f.loop, *client, front.endpoint(), "POST", "/execute",
                           Headers{{"Content-Type", "application/json"}}, R"({"command":"true"})");
  REQUIRE(refused.has_value());
  CHECK(refused->head.status == 502);
  CHECK(detail_of(refused->body).find("tcp") != std::string::npos);
  client.reset();
  front.server.reset();
  proxy.reset();
  f.check_no_leaks();
}

TEST_CASE("proxy: connect timeout answers 504") {
  test::LoopFixture f;
  // A listener with a one-slot backlog, filled and never accepted: further SYNs are dropped.
  int lfd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(lfd >= 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(lfd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0);
  REQUIRE(::listen(lfd, 0) == 0);
  socklen_t len = sizeof(sa);
  REQUIRE(::getsockname(lfd, reinterpret_cast<sockaddr*>(&sa), &len) == 0);
  std::vector<int> fillers;
  for (int i = 0; i < 4; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    (void)::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
    fillers.push_back(fd);
  }
  ProxyOptions po;
  po.connect_timeout = 200ms;
  auto proxy = TerminalProxy::create(*f.loop, po);
  TestServer front(*f.loop);
  front.handler = [&](ServerExchangePtr ex) {
    proxy->forward(std::move(ex), ProxyTarget{Endpoint::tcp("127.0.0.1", ntohs(sa.sin_port)), "k"},
                   ForwardOptions{});
  };
  auto client = HttpClient::create(*f.loop);
  auto t0 = std::chrono::steady_clock::now();
  auto r = fetch_now(*f.loop, *client, front.endpoint(), "GET", "/health");
  REQUIRE(r.has_value());
  CHECK(r->head.status == 504);
  CHECK(std::chrono::steady_clock::now() - t0 >= 150ms);
  CHECK(std::chrono::steady_clock::now() - t0 < 5s);
  client.reset();
  front.server.reset();
  proxy.reset();
  for (int fd : fillers) ::close(fd);
  ::close(lfd);
  f.check_no_leaks();
}

TEST_CASE("proxy: an upstream that stays silent answers 504 after the idle timeout") {
  test::LoopFixture f;
  ServerExchangePtr held;
  TestServer upstream(*f.loop);
  upstream.handler = [&](ServerExchangePtr ex) { held = std::move(ex); };
  ProxyOptions po;
  po.idle_timeout = 300ms;
  auto proxy = TerminalProxy::create(*f.loop, po);
  TestServer front(*f.loop);
  front.handler = [&](ServerExchangePtr ex) {
    proxy->forward(std::move(ex), ProxyTarget{upstream.endpoint(), "k"}, ForwardOptions{});
  };
  auto client = HttpClient::create(*f.loop);
  auto r = fetch_now(*f.loop, *client, front.endpoint(), "GET", "/slow");
  REQUIRE(r.has_value());
  CHECK(r->head.status == 504);
  CHECK(held != nullptr);
  held.reset();
  client.reset();
  front.server.reset();
  proxy.reset();
  upstream.server.reset();
  f.check_no_leaks();
}

TEST_CASE("proxy: retry_connect_for waits for an agent that starts 300 ms later") {
  test::LoopFixture f;
  test::TempDir dir;
  test::TempDir home;
  const Endpoint sock = Endpoint::unix_socket(dir.file("agent.sock"));
  auto proxy = TerminalProxy::create(*f.loop);
  std::chrono::milliseconds retry{3000};
  TestServer front(*f.loop);
  front.handler = [&](ServerExchangePtr ex) {
    ForwardOptions o;
    o.retry_connect_for = retry;
    proxy->forward(std::move(ex), ProxyTarget{sock, test::kKey}, std::move(o));
  };
  auto client = HttpClient::create(*f.loop);

  // A POST whose body is too large to keep (over 64 KiB) is never retried: it fails at once.
  auto t0 = std::chrono::steady_clock::now();
  auto post = fetch_now(*f.loop, *client, front.endpoint(), "POST", "/files/write",
                        Headers{{"Content-Type", "application/json"}},
                        R"({"path":"a","content":")" + std::string(70 * 1024, 'b') + R"("})");
  REQUIRE(post.has_value());
  CHECK(post->head.status == 502);
  CHECK(std::chrono::steady_clock::now() - t0 < 1s);

  // A small body is kept, so its POST is retried like a GET (here until the retries run out).
  retry = 300ms;
  t0 = std::chrono::steady_clock::now();
  auto small = fetch_now(*f.loop, *client, front.endpoint(), "POST", "/files/write",
                         Headers{{"Content-Type", "application/json"}}, R"({"path":"a","content":"b"})");
  REQUIRE(small.has_value());
  CHECK(small->head.status == 503);
  CHECK(std::chrono::steady_clock::now() - t0 >= 250ms);

  // Retries that run out: 503.
  retry = 300ms;
  t0 = std::chrono::steady_clock::now();
  auto gave_up = fetch_now(*f.loop, *client, front.endpoint(), "GET", "/files/list?directory=.");
  REQUIRE(gave_up.has_value());
  CHECK(gave_up->head.status == 503);
  CHECK(std::chrono::steady_clock::now() - t0 >= 250ms);

  // The agent appears while a GET waits.
  retry = 3000ms;
  AgentPtr agent;
  auto starter = f.loop->create_timer([&] {
    AgentOptions options;
    options.listen = sock;
    options.api_key = test::kKey;
    options.home = home.path();
    auto created = Agent::create(*f.loop, std::move(options));
    REQUIRE(created.has_value());
    agent = std::move(created).value();
  });
  starter->start(300ms);
  t0 = std::chrono::steady_clock::now();
  auto got = fetch_now(*f.loop, *client, front.endpoint(), "GET", "/files/list?directory=.");
  REQUIRE(got.has_value());
  CHECK(got->head.status == 200);
  CHECK(std::chrono::steady_clock::now() - t0 >= 250ms);
  REQUIRE(agent != nullptr);
  auto wrote = fetch_now(*f.loop, *client, front.endpoint(), "POST", "/files/write",
                         Headers{{"Content-Type", "application/json"}}, R"({"path":"a","content":"b"})");
  REQUIRE(wrote.has_value());
  CHECK(wrote->head.status == 200);

  starter.reset();
  client.reset();
  front.server.reset();
  proxy.reset();
  bool done = false;
  agent->shutdown(1s, [&](Status) { done = true; });
  REQUIRE(test::run_until(*f.loop, [&] { return done; }));
  agent.reset();
  f.check_no_leaks();
}

TEST_CASE("proxy: websocket to a real terminal with the key swapped in the auth message") {
  PlainShell shell;
  test::AgentFixture f;
  const std::string id = create_terminal(f);
  auto proxy = TerminalProxy::create(*f.loop);
  int opened = 0;
  int closed = 0;
  std::optional<std::string> checked;
  TestServer front(*f.loop);
  front.handler = [&](ServerExchangePtr ex) {
    auto o = ws_options(&opened, &closed);
    o.check_client_token = [&checked](std::string token, MoveOnlyFunction<void(bool)> done) {
      checked = token;
      done(token == kUserToken);
    };
    proxy->forward_websocket(std::move(ex), ProxyTarget{f.agent->local_endpoint(), test::kKey}, std::move(o));
  };
  test::WsClient ws(*f.loop, front.endpoint(), "/api/terminals/" + id);
  REQUIRE(ws.upgraded());
  CHECK(proxy->open_tunnels() == 1);
  // The auth message and the first input in one write: the input must follow the auth.
  ws.send_text(auth_message(kUserToken));
  ws.send_binary("echo hi-$((6*7))\n");
  CHECK(ws.wait_output("hi-42"));
  CHECK(checked == std::optional<std::string>(kUserToken));
  CHECK(opened == 1);
  CHECK_FALSE(ws.close_code.has_value());
  // Pings pass through to the agent, which answers them.
  ws.send_ping("there?");
  CHECK(ws.wait([&] { return !ws.pongs.empty(); }));
  // The client's close goes to the agent, whose answer comes back; the tunnel then ends.
  ws.send_close(1000);
  CHECK(ws.wait_close_frame());
  CHECK(ws.close_code == std::optional<std::uint16_t>(1000));
  CHECK(ws.wait_disconnected());
  CHECK(test::run_until(*f.loop, [&] { return closed == 1 && proxy->open_tunnels() == 0; }));
  front.server.reset();
  proxy.reset();
  f.finish();
}

TEST_CASE("proxy: websocket with a bad client token closes 4001") {
  PlainShell shell;
  test::AgentFixture f;
  const std::string id = create_terminal(f);
  auto proxy = TerminalProxy::create(*f.loop);
  int opened = 0;
  TestServer front(*f.loop);
  front.handler = [&](ServerExchangePtr ex) {
    proxy->forward_websocket(std::move(ex), ProxyTarget{f.agent->local_endpoint(), test::kKey},
                             ws_options(&opened));
  };
  SUBCASE("wrong token") {
    test::WsClient ws(*f.loop, front.endpoint(), "/api/terminals/" + id);
    REQUIRE(ws.upgraded());
    ws.send_text(auth_message("someone-else"));
    REQUIRE(ws.wait_close_frame());
    CHECK(ws.close_code == std::optional<std::uint16_t>(4001));
    CHECK(ws.close_reason == "Invalid token");
    CHECK(ws.wait_disconnected());
  }
  SUBCASE("the agent's own key is not the user's token") {
    test::WsClient ws(*f.loop, front.endpoint(), "/api/terminals/" + id);
    REQUIRE(ws.upgraded());
    ws.send_text(auth_message(test::kKey));
    REQUIRE(ws.wait_close_frame());
    CHECK(ws.close_code == std::optional<std::uint16_t>(4001));
  }
  CHECK(opened == 0);
  CHECK(test::run_until(*f.loop, [&] { return proxy->open_tunnels() == 0; }));
  front.server.reset();
  proxy.reset();
  f.finish();
}

TEST_CASE("proxy: websocket whose first message is not auth closes 4001") {
  PlainShell shell;
  test::AgentFixture f;
  const std::string id = create_terminal(f);
  auto proxy = TerminalProxy::create(*f.loop);
  TestServer front(*f.loop);
  front.handler = [&](ServerExchangePtr ex) {
    proxy->forward_websocket(std::move(ex), ProxyTarget{f.agent->local_endpoint(), test::kKey}, ws_options());
  };
  std::string expected_reason;
  {
    test::WsClient ws(*f.loop, front.endpoint(), "/api/terminals/" + id);
    REQUIRE(ws.upgraded());
    SUBCASE("binary input first") {
      ws.send_binary("echo hi\n");
      expected_reason = "Auth failed";
    }
    SUBCASE("another type") {
      ws.send_text(R"({"type":"resize","cols":80,"rows":24})");
      expected_reason = "Expected auth message";
    }
    SUBCASE("not json") {
      ws.send_text("hello");
      expected_reason = "Auth timeout or invalid payload";
    }
    SUBCASE("too large") {
      ws.send_text(R"({"type":"auth","token":")" + std::string(70 * 1024, 'a') + R"("})");
      expected_reason = "Auth message too large";
    }
    REQUIRE(ws.wait_close_frame());
    CHECK(ws.close_code == std::optional<std::uint16_t>(4001));
    CHECK(ws.close_reason == expected_reason);
    CHECK(ws.wait_disconnected());
  }
  CHECK(test::run_until(*f.loop, [&] { return proxy->open_tunnels() == 0; }));
  front.server.reset();
  proxy.reset();
  f.finish();
}

TEST_CASE("proxy: websocket handshake errors are answered over HTTP") {
  test::LoopFixture f;
  auto proxy = TerminalProxy::create(*f.loop);
  TestServer front(*f.loop);
  front.handler = [&](ServerExchangePtr ex) {
    proxy->forward_websocket(std::move(ex), ProxyTarget{Endpoint::tcp("127.0.0.1", 1), "k"}, ws_options());
  };
  {
    test::WsClient ws(*f.loop, front.endpoint(), "/api/terminals/x", "");
    CHECK(ws.status == 400);
  }
  {
    test::WsClient ws(*f.loop, front.endpoint(), "/api/terminals/x", "dGhlIHNhbXBsZSBub25jZQ==",
                      "Sec-WebSocket-Version: 8\r\n");
    CHECK(ws.status == 426);
  }
  CHECK(proxy->open_tunnels() == 0);
  front.server.reset();
  proxy.reset();
  f.check_no_leaks();
}

TEST_CASE("proxy: websocket to an unreachable agent closes 1014") {
  test::LoopFixture f;
  test::TempDir dir;
  auto proxy = TerminalProxy::create(*f.loop);
  TestServer front(*f.loop);
  front.handler = [&](ServerExchangePtr ex) {
    proxy->forward_websocket(std::move(ex), ProxyTarget{Endpoint::unix_socket(dir.file("gone.sock")), "k"},
                             ws_options());
  };
  test::WsClient ws(*f.loop, front.endpoint(), "/api/terminals/abc");
  REQUIRE(ws.upgraded());
  ws.send_text(auth_message(kUserToken));
  REQUIRE(ws.wait_close_frame());
  CHECK(ws.close_code == std::optional<std::uint16_t>(1014));
  CHECK(ws.wait_disconnected());
  CHECK(test::run_until(*f.loop, [&] { return proxy->open_tunnels() == 0; }));
  front.server.reset();
  proxy.reset();
  f.check_no_leaks();
}

TEST_CASE("proxy: websocket for an unknown session on the agent closes 4004") {
  test::AgentFixture f;
  auto proxy = TerminalProxy::create(*f.loop);
  TestServer front(*f.loop);
  front.handler = [&](ServerExchangePtr ex) {
    proxy->forward_websocket(std::move(ex), ProxyTarget{f.agent->local_endpoint(), test::kKey}, ws_options());
  };
  test::WsClient ws(*f.loop, front.endpoint(), "/api/terminals/no-such-session");
  REQUIRE(ws.upgraded());
  ws.send_text(auth_message(kUserToken));
  REQUIRE(ws.wait_close_frame());
  CHECK(ws.close_code == std::optional<std::uint16_t>(4004));
  CHECK(ws.wait_disconnected());
  front.server.reset();
  proxy.reset();
  f.finish();
}

TEST_CASE("proxy: websocket closes when the agent goes away") {
  PlainShell shell;
  test::AgentFixture f;
  const std::string id = create_terminal(f);
  auto proxy = TerminalProxy::create(*f.loop);
  int closed = 0;
  TestServer front(*f.loop);
  front.handler = [&](ServerExchangePtr ex) {
    proxy->forward_websocket(std::move(ex), ProxyTarget{f.agent->local_endpoint(), test::kKey},
                             ws_options(nullptr, &closed));
  };
  test::WsClient ws(*f.loop, front.endpoint(), "/api/terminals/" + id);
  REQUIRE(ws.upgraded());
  ws.send_text(auth_message(kUserToken));
  ws.send_binary("echo hi-$((6*7))\n");
  REQUIRE(ws.wait_output("hi-42"));
  bool done = false;
  f.client.reset();
  f.agent->shutdown(200ms, [&](Status) { done = true; });
  REQUIRE(test::run_until(*f.loop, [&] { return done; }));
  f.agent.reset();
  REQUIRE(ws.wait_close_frame());
  // The agent dropped the connection without a close frame: the proxy says why.
  CHECK(ws.close_code == std::optional<std::uint16_t>(1011));
  CHECK(ws.close_reason == "Terminal connection lost");
  CHECK(ws.wait_disconnected());
  CHECK(test::run_until(*f.loop, [&] { return closed == 1 && proxy->open_tunnels() == 0; }));
  front.server.reset();
  proxy.reset();
  f.check_no_leaks();
}

TEST_CASE("proxy: websocket resolve_target finds the terminal once the token is known") {
  PlainShell shell;
  test::AgentFixture f;
  const std::string id = create_terminal(f);
  auto proxy = TerminalProxy::create(*f.loop);
  std::vector<std::string> tokens;
  TestServer front(*f.loop);
  front.handler = [&](ServerExchangePtr ex) {
    TerminalProxy::WsOptions o;
    o.resolve_target = [&](std::string token, MoveOnlyFunction<void(Result<ProxyTarget>)> done) {
      tokens.push_back(token);
      if (token != kUserToken) return done(Error(Errc::PolicyDenied, "Failed to resolve terminal instance",
                                                 ErrorSource::Http, 4003));
      done(ProxyTarget{f.agent->local_endpoint(), test::kKey});
    };
    // The real target is not known yet.
    proxy->forward_websocket(std::move(ex), ProxyTarget{}, std::move(o));
  };
  SUBCASE("resolved") {
    test::WsClient ws(*f.loop, front.endpoint(), "/api/terminals/" + id);
    REQUIRE(ws.upgraded());
    ws.send_text(auth_message(kUserToken));
    ws.send_binary("echo hi-$((6*7))\n");
    CHECK(ws.wait_output("hi-42"));
    CHECK_FALSE(ws.close_code.has_value());
  }
  SUBCASE("refused with the caller's close code and reason") {
    test::WsClient ws(*f.loop, front.endpoint(), "/api/terminals/" + id);
    REQUIRE(ws.upgraded());
    ws.send_text(auth_message("bad"));
    REQUIRE(ws.wait_close_frame());
    CHECK(ws.close_code == std::optional<std::uint16_t>(4003));
    CHECK(ws.close_reason == "Failed to resolve terminal instance");
  }
  CHECK(tokens.size() == 1);
  front.server.reset();
  proxy.reset();
  f.finish();
}

TEST_CASE("proxy: websocket output to a client that stops reading is held back") {
  PlainShell shell;
  test::AgentFixture f;
  const std::string id = create_terminal(f);
  auto proxy = TerminalProxy::create(*f.loop);
  TestServer front(*f.loop);
  front.handler = [&](ServerExchangePtr ex) {
    proxy->forward_websocket(std::move(ex), ProxyTarget{f.agent->local_endpoint(), test::kKey}, ws_options());
  };
  test::WsClient ws(*f.loop, front.endpoint(), "/api/terminals/" + id);
  REQUIRE(ws.upgraded());
  ws.send_text(auth_message(kUserToken));
  ws.send_binary("echo ready-$((1+1))\n");
  REQUIRE(ws.wait_output("ready-2"));
  const std::size_t baseline = test::current_rss_bytes();
  ws.pause_reading();
  // Far more output than the socket buffers on the way hold.
  ws.send_binary("head -c 200000000 /dev/zero | tr '\\0' 'x'; echo; echo done-$((2+3))\n");
  test::run_for(*f.loop, 2000ms);
  const std::size_t now = test::current_rss_bytes();
  const std::size_t growth = now > baseline ? now - baseline : 0;
  MESSAGE("RSS growth while the client did not read: " << growth / 1024 << " KiB");
#if !defined(__SANITIZE_ADDRESS__)
  CHECK(growth < (24u << 20));
#endif
  ws.resume_reading();
  // Everything arrives once the client reads again (output is discarded as it comes).
  CHECK(ws.wait([&] {
    if (ws.output.size() > (1u << 20)) ws.output.erase(0, ws.output.size() - 64);
    return ws.output.find("done-5") != std::string::npos;
  }, 60s));
  front.server.reset();
  proxy.reset();
  f.finish();
}

TEST_CASE("proxy: websocket retry_connect_for waits for a starting agent") {
  test::LoopFixture f;
  test::TempDir dir;
  test::TempDir home;
  const Endpoint sock = Endpoint::unix_socket(dir.file("agent.sock"));
  auto proxy = TerminalProxy::create(*f.loop);
  int opened = 0;
  TestServer front(*f.loop);
  front.handler = [&](ServerExchangePtr ex) {
    auto o = ws_options(&opened);
    o.upstream_target = "/api/terminals/none";
    o.retry_connect_for = 3000ms;
    proxy->forward_websocket(std::move(ex), ProxyTarget{sock, test::kKey}, std::move(o));
  };
  AgentPtr agent;
  auto starter = f.loop->create_timer([&] {
    AgentOptions options;
    options.listen = sock;
    options.api_key = test::kKey;
    options.home = home.path();
    auto created = Agent::create(*f.loop, std::move(options));
    REQUIRE(created.has_value());
    agent = std::move(created).value();
  });
  starter->start(300ms);
  {
    test::WsClient ws(*f.loop, front.endpoint(), "/api/terminals/x");
    REQUIRE(ws.upgraded());
    ws.send_text(auth_message(kUserToken));
    // The agent is reached once it listens; it knows no such session: 4004, not 1014.
    REQUIRE(ws.wait_close_frame());
    CHECK(ws.close_code == std::optional<std::uint16_t>(4004));
    CHECK(agent != nullptr);
  }
  CHECK(opened == 0);
  starter.reset();
  front.server.reset();
  proxy.reset();
  bool done = false;
  agent->shutdown(1s, [&](Status) { done = true; });
  REQUIRE(test::run_until(*f.loop, [&] { return done; }));
  agent.reset();
  f.check_no_leaks();
}

TEST_CASE("proxy: websocket client that leaves while its terminal is resolved") {
  test::LoopFixture f;
  auto proxy = TerminalProxy::create(*f.loop);
  std::optional<MoveOnlyFunction<void(Result<ProxyTarget>)>> pending;
  int opened = 0;
  int closed = 0;
  TestServer front(*f.loop);
  front.handler = [&](ServerExchangePtr ex) {
    auto o = ws_options(&opened, &closed);
    o.resolve_target = [&](std::string, MoveOnlyFunction<void(Result<ProxyTarget>)> done) {
      pending.emplace(std::move(done));  // answered only after the client left
    };
    proxy->forward_websocket(std::move(ex), ProxyTarget{}, std::move(o));
  };
  {
    test::WsClient ws(*f.loop, front.endpoint(), "/api/terminals/x");
    REQUIRE(ws.upgraded());
    ws.send_text(auth_message(kUserToken));
    ws.send_binary("typed while waiting\n");
    REQUIRE(test::run_until(*f.loop, [&] { return pending.has_value(); }));
    CHECK(proxy->open_tunnels() == 1);
    ws.disconnect();
  }
  // Seen although the tunnel is still waiting for the resolution.
  CHECK(test::run_until(*f.loop, [&] { return proxy->open_tunnels() == 0; }));
  (*pending)(ProxyTarget{Endpoint::tcp("127.0.0.1", 1), "k"});
  test::run_for(*f.loop, 50ms);
  CHECK(opened == 0);
  CHECK(closed == 0);
  pending.reset();
  front.server.reset();
  proxy.reset();
  f.check_no_leaks();
}

TEST_CASE("proxy: websocket without traffic for the idle timeout closes 1001") {
  PlainShell shell;
  test::AgentFixture f;
  const std::string id = create_terminal(f);
  ProxyOptions po;
  po.idle_timeout = 500ms;
  auto proxy = TerminalProxy::create(*f.loop, po);
  int closed = 0;
  TestServer front(*f.loop);
  front.handler = [&](ServerExchangePtr ex) {
    proxy->forward_websocket(std::move(ex), ProxyTarget{f.agent->local_endpoint(), test::kKey},
                             ws_options(nullptr, &closed));
  };
  test::WsClient ws(*f.loop, front.endpoint(), "/api/terminals/" + id);
  REQUIRE(ws.upgraded());
  const auto t0 = std::chrono::steady_clock::now();
  ws.send_text(auth_message(kUserToken));
  // The shell's start-up output counts as traffic; then nothing more comes.
  REQUIRE(ws.wait_close_frame());
  CHECK(std::chrono::steady_clock::now() - t0 >= 500ms);
  CHECK(ws.close_code == std::optional<std::uint16_t>(1001));
  CHECK(ws.close_reason == "Idle timeout");
  CHECK(ws.wait_disconnected());
  CHECK(test::run_until(*f.loop, [&] { return closed == 1 && proxy->open_tunnels() == 0; }));
  front.server.reset();
  proxy.reset();
  f.finish();
}

}  // TEST_SUITE
