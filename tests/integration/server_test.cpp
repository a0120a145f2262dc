// Server over real loopback and unix sockets; clients speak raw bytes so the wire format is
// checked exactly.

#include <doctest/doctest.h>
#include <sys/stat.h>

#include <atomic>
#include <cstdio>
#include <thread>

#include "support/loop_runner.hpp"
#include "support/raw_client.hpp"
#include "terminals/loop.hpp"
#include "terminals/server.hpp"

using namespace terminals;
using namespace std::chrono_literals;
using test::parse_responses;
using test::RawClient;

namespace {

struct ServerFixture : test::LoopFixture {
  ServerPtr server;

  void start(ServerOptions options, RequestHandler handler) {
    auto s = Server::create(*loop, std::move(options), std::move(handler));
    REQUIRE_MESSAGE(s, (s ? "" : s.error().to_string()));
    server = std::move(s).value();
  }
  Endpoint endpoint() const { return server->local_endpoint(); }
  std::unique_ptr<RawClient> client(bool start_reading = true) {
    auto c = std::make_unique<RawClient>(*loop, endpoint(), start_reading);
    REQUIRE_MESSAGE(c->connected(), c->connect_error);
    return c;
  }
  /// Destroys the server, lets close callbacks run and checks that nothing leaked.
  void finish() {
    server.reset();
    check_no_leaks();
  }
};

RequestHandler hello_handler() {
  return [](ServerExchangePtr ex) {
    ex->respond(200, {{"Content-Type", "text/plain"}}, "hello " + std::string(ex->request().target));
  };
}

std::string get(std::string_view target, std::string_view extra = {}) {
  return "GET " + std::string(target) + " HTTP/1.1\r\nHost: t\r\n" + std::string(extra) + "\r\n";
}

bool has_json_detail(const test::ParsedResponse& r) {
  auto ct = r.headers.get("content-type");
  return ct && *ct == "application/json" && r.body.rfind("{\"detail\": \"", 0) == 0 &&
         r.body.size() > 14 && r.body.back() == '}';
}

}  // namespace

TEST_SUITE("integration") {

TEST_CASE("server: keep-alive carries two requests on one connection") {
  ServerFixture f;
  std::vector<std::string> peers;
  f.start({}, [&](ServerExchangePtr ex) {
    peers.push_back(ex->peer());
    ex->respond(200, {}, "ok" + std::string(ex->request().target));
  });
  auto c = f.client();
  c->send(get("/a"));
  REQUIRE(c->wait([&] { return parse_responses(c->received).size() == 1; }));
  CHECK(c->received ==
        "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nok/a");  // exact bytes: one head, no extras
  c->send(get("/b"));
  REQUIRE(c->wait([&] { return parse_responses(c->received).size() == 2; }));
  auto rs = parse_responses(c->received);
  CHECK(rs[1].body == "ok/b");
  CHECK_FALSE(c->closed);
  REQUIRE(peers.size() == 2);
  CHECK(peers[0] == peers[1]);
  CHECK(peers[0].rfind("127.0.0.1:", 0) == 0);
  CHECK(f.server->connection_count() == 1);
  c.reset();
  CHECK(test::run_until(*f.loop, [&] { return f.server->connection_count() == 0; }));
  f.finish();
}

TEST_CASE("server: pipelined requests are answered in order / even when the first answers late") {
  ServerFixture f;
  std::vector<std::string> dispatched;
  ServerExchangePtr first;
  std::unique_ptr<Timer> late;
  f.start({}, [&](ServerExchangePtr ex) {
    dispatched.push_back(ex->request().target);
    if (ex->request().target == "/1") {
      first = ex;
      late = f.loop->create_timer([&] { first->respond(200, {}, "one"); });
      late->start(50ms);
      return;
    }
    ex->respond(200, {}, ex->request().target == "/2" ? "two" : "three");
  });
  auto c = f.client();
  c->send(get("/1") + get("/2") + get("/3"));
  REQUIRE(c->wait([&] { return parse_responses(c->received).size() == 3; }));
  auto rs = parse_responses(c->received);
  CHECK(rs[0].body == "one");
  CHECK(rs[1].body == "two");
  CHECK(rs[2].body == "three");
  // The next request reaches the handler only once the previous response ended.
  CHECK(dispatched == std::vector<std::string>{"/1", "/2", "/3"});
  CHECK_FALSE(c->closed);
  late.reset();
  first.reset();
  c.reset();
  f.finish();
}

TEST_CASE("server: chunked request body streamed in / chunked response streamed out") {
  ServerFixture f;
  std::vector<std::string> pieces;
  bool body_ok = false;
  f.start({}, [&](ServerExchangePtr ex) {
    CHECK(ex->request().chunked);
    ResponseHead head;
    head.headers.add("Content-Type", "text/plain");
    ex->write_head(head);
    ex->read_body({[&, ex](std::string_view d) {
                     pieces.emplace_back(d);
                     ex->write(d);  // echo each piece as its own chunk
                   },
                   [&, ex](Status st) {
                     body_ok = st.has_value();
                     ex->end("!");
                   }});
  });
  auto c = f.client();
  c->send("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
  REQUIRE(c->wait([&] { return !pieces.empty(); }));
  c->send("6\r\n world\r\n0\r\n\r\n");
  REQUIRE(c->wait([&] { return parse_responses(c->received).size() == 1; }));
  auto rs = parse_responses(c->received);
  CHECK(rs[0].status == 200);
  CHECK(rs[0].chunked);
  CHECK_FALSE(rs[0].headers.has("content-length"));
  CHECK(rs[0].body == "hello world!");
  CHECK(body_ok);
  // The wire carries one chunk per write, then the terminator.
  CHECK(c->received.find("\r\n\r\n5\r\nhello\r\n6\r\n world\r\n1\r\n!\r\n0\r\n\r\n") != std::string::npos);
  c.reset();
  f.finish();
}

TEST_CASE("server: content-length bodies both ways") {
  ServerFixture f;
  std::string got;
  f.start({}, [&](ServerExchangePtr ex) {
    CHECK(ex->request().content_length == 11u);
    ex->read_body({[&](std::string_view d) { got.append(d); },
                   [&, ex](Status st) {
                     CHECK(st.has_value());
                     ResponseHead h;
                     h.headers.add("Content-Length", std::to_string(got.size()));
                     ex->write_head(h);
                     ex->write(got.substr(0, 5));
                     ex->end(got.substr(5));
                   }});
  });
  auto c = f.client();
  c->send("POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello");
  c->send(" world");
  REQUIRE(c->wait([&] { return parse_responses(c->received).size() == 1; }));
  auto rs = parse_responses(c->received);
  CHECK(rs[0].body == "hello world");
  CHECK(rs[0].headers.get("content-length") == "11");
  CHECK_FALSE(rs[0].headers.has("transfer-encoding"));
  CHECK(got == "hello world");
  c.reset();
  f.finish();
}

TEST_CASE("server: a 1 GiB request body streams through with bounded memory") {
  ServerFixture f;
  constexpr std::uint64_t kTotal = 1ull << 30;
  ServerOptions o;
  o.max_body_bytes = 2ull << 30;
  std::uint64_t received = 0;
  std::size_t rss_base = 0, rss_max = 0;
  int pauses = 0;
  bool ended = false;
  std::unique_ptr<Timer> resume_timer;
  f.start(o, [&](ServerExchangePtr ex) {
    rss_base = test::current_rss_bytes();
    ex->read_body({[&, ex](std::string_view d) {
                     const std::uint64_t before = received;
                     received += d.size();
                     // Every 128 MiB: sample memory and pause briefly, as a slow consumer would.
                     if (before / (128ull << 20) != received / (128ull << 20)) {
                       rss_max = std::max(rss_max, test::current_rss_bytes());
                       ex->pause_body();
                       ++pauses;
                       resume_timer = f.loop->create_timer([ex] { ex->resume_body(); });
                       resume_timer->start(1ms);
                     }
                   },
                   [&, ex](Status st) {
                     CHECK(st.has_value());
                     ended = true;
                     ex->respond(200, {}, std::to_string(received));
                   }});
  });
  std::atomic<bool> client_done{false};
  std::string response;
  const Endpoint ep = f.endpoint();
  auto t0 = std::chrono::steady_clock::now();
  std::thread client([&] {
    test::BlockingSocket s(ep);
    if (s.ok()) {
      s.send_all("POST /upload HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: " +
                 std::to_string(kTotal) + "\r\n\r\n");
      std::string chunk(256 * 1024, 'x');
      for (std::uint64_t sent = 0; sent < kTotal; sent += chunk.size()) {
        if (!s.send_all(chunk)) break;  // blocks while the server does not read: backpressure
      }
      response = s.read_to_end();
    }
    client_done = true;
  });
  const bool finished = test::run_until(*f.loop, [&] { return client_done.load(); }, 100s);
  client.join();
  REQUIRE(finished);
  MESSAGE("1 GiB upload took " << std::chrono::duration_cast<std::chrono::milliseconds>(
                                      std::chrono::steady_clock::now() - t0)
                                      .count()
                               << " ms");
  CHECK(ended);
  CHECK(received == kTotal);
  CHECK(pauses >= 7);
  CHECK(rss_max > 0);
  CHECK(rss_max < rss_base + (64u << 20));
  auto rs = parse_responses(response, true);
  REQUIRE(rs.size() == 1);
  CHECK(rs[0].body == std::to_string(kTotal));
  CHECK(rs[0].headers.get("connection") == "close");
  resume_timer.reset();
  f.finish();
}

TEST_CASE("server: a client that stops reading gets backpressure: write() false / then drain") {
  ServerFixture f;
  constexpr std::size_t kChunk = 64 * 1024;
  constexpr std::uint64_t kTotal = 128ull << 20;
  std::uint64_t written = 0;
  int refusals = 0, drains = 0;
  bool blocked = false;
  ServerExchangePtr held;
  std::string chunk(kChunk, 'y');
  MoveOnlyFunction<void()> pump;
  f.start({}, [&](ServerExchangePtr ex) {
    held = ex;
    ResponseHead h;
    h.headers.add("Content-Length", std::to_string(kTotal));
    ex->write_head(h);
    pump = [&] {
      while (written < kTotal) {
        written += kChunk;
        if (!held->write(chunk)) {
          ++refusals;
          blocked = true;
          return;  // wait for the drain handler
        }
      }
      held->end();
    };
    ex->set_drain_handler([&] {
      ++drains;
      blocked = false;
      pump();
    });
    pump();
  });
  auto c = f.client(/*start_reading=*/false);
  const std::size_t rss_base = test::current_rss_bytes();
  c->send(get("/big"));
  REQUIRE(c->wait([&] { return blocked; }));
  // While the client does not read, the server stops producing.
  test::run_for(*f.loop, 300ms);
  CHECK(blocked);
  const std::uint64_t stalled_at = written;
  CHECK(stalled_at < 32ull << 20);  // socket buffers + our watermark, far below the total
  CHECK(test::current_rss_bytes() < rss_base + (64u << 20));
  // The client reads again: drains resume the producer until the end.
  std::uint64_t got = 0;
  std::string head_part;
  c->stream->read_start([&](Result<std::string_view> r) {
    if (!r) return;
    if (head_part.find("\r\n\r\n") == std::string::npos) {
      head_part.append(*r);
      auto p = head_part.find("\r\n\r\n");
      if (p != std::string::npos) got += head_part.size() - (p + 4);
      return;
    }
    got += r->size();
  });
  REQUIRE(c->wait([&] { return got == kTotal; }, 60s));
  CHECK(refusals >= 1);
  CHECK(drains >= 1);
  CHECK(held->ended());
#if !defined(__SANITIZE_ADDRESS__)  // ASan's quarantine keeps freed buffers resident
  CHECK(test::current_rss_bytes() < rss_base + (64u << 20));
#endif
  CHECK(head_part.rfind("HTTP/1.1 200 OK\r\nContent-Length: 134217728\r\n\r\n", 0) == 0);
  pump = nullptr;
  held.reset();
  c.reset();
  f.finish();
}

TEST_CASE("server: header limits answer 431 and close") {
  ServerFixture f;
  ServerOptions o;
  o.max_header_bytes = 4096;
  o.max_headers = 10;
  int handled = 0;
  f.start(o, [&](ServerExchangePtr ex) {
    ++handled;
    ex->respond(200, {}, "");
  });
  SUBCASE("too large") {
    auto c = f.client();
    c->send("GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + std::string(8000, 'a') + "\r\n\r\n");
    REQUIRE(c->wait_closed());
    auto rs = parse_responses(c->received);
    REQUIRE(rs.size() == 1);
    CHECK(rs[0].status == 431);
    CHECK(rs[0].headers.get("connection") == "close");
    CHECK(has_json_detail(rs[0]));
  }
  SUBCASE("too many") {
    auto c = f.client();
    std::string req = "GET / HTTP/1.1\r\n";
    for (int i = 0; i < 11; ++i) req += "H" + std::to_string(i) + ": v\r\n";
    c->send(req + "\r\n");
    REQUIRE(c->wait_closed());
    auto rs = parse_responses(c->received);
    REQUIRE(rs.size() == 1);
    CHECK(rs[0].status == 431);
    CHECK(rs[0].body.find("header") != std::string::npos);
  }
  CHECK(handled == 0);
  f.finish();
}

TEST_CASE("server: a Content-Length over the body limit answers 413 before any body is sent") {
  ServerFixture f;
  ServerOptions o;
  o.max_body_bytes = 1000;
  int handled = 0;
  f.start(o, [&](ServerExchangePtr) { ++handled; });
  auto c = f.client();
  c->send("POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n");
  REQUIRE(c->wait_closed());
  auto rs = parse_responses(c->received);
  REQUIRE(rs.size() == 1);
  CHECK(rs[0].status == 413);
  CHECK(rs[0].headers.get("connection") == "close");
  CHECK(has_json_detail(rs[0]));
  CHECK(handled == 0);
  c.reset();
  f.finish();
}

TEST_CASE("server: a chunked body over the limit answers 413 and ends the body with LimitExceeded") {
  ServerFixture f;
  ServerOptions o;
  o.max_body_bytes = 1000;
  std::uint64_t got = 0;
  std::optional<Error> body_error;
  int aborts = 0;
  f.start(o, [&](ServerExchangePtr ex) {
    ex->on_abort([&] { ++aborts; });
    ex->read_body({[&](std::string_view d) { got += d.size(); },
                   [&](Status st) {
                     if (!st) body_error = st.error();
                   }});
  });
  auto c = f.client();
  std::string req = "POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 5; ++i) req += "190\r\n" + std::string(400, 'z') + "\r\n";
  c->send(req);
  REQUIRE(c->wait_closed());
  auto rs = parse_responses(c->received);
  REQUIRE(rs.size() == 1);
  CHECK(rs[0].status == 413);
  CHECK(has_json_detail(rs[0]));
  REQUIRE(test::run_until(*f.loop, [&] { return body_error.has_value(); }));
  CHECK(body_error->code == Errc::LimitExceeded);
  CHECK(got <= 1000);
  CHECK(aborts == 1);
  c.reset();
  f.finish();
}

TEST_CASE("server: a head not received within header_timeout gets 408") {
  ServerFixture f;
  ServerOptions o;
  o.header_timeout = 100ms;
  f.start(o, hello_handler());
  auto c = f.client();
  c->send("GET /slow HTTP/1.1\r\nHost: t\r\n");  // never finished
  REQUIRE(c->wait_closed(5s));
  auto rs = parse_responses(c->received);
  REQUIRE(rs.size() == 1);
  CHECK(rs[0].status == 408);
  CHECK(rs[0].headers.get("connection") == "close");
  CHECK(has_json_detail(rs[0]));
  // A connection that sends nothing at all is closed without an answer.
  auto quiet = f.client();
  REQUIRE(quiet->wait_closed(5s));
  CHECK(quiet->received.empty());
  c.reset();
  quiet.reset();
  f.finish();
}

TEST_CASE("server: an idle keep-alive connection is closed silently after keep_alive_timeout") {
  ServerFixture f;
  ServerOptions o;
  o.keep_alive_timeout = 100ms;
  f.start(o, hello_handler());
  auto c = f.client();
  c->send(get("/"));
  REQUIRE(c->wait([&] { return parse_responses(c->received).size() == 1; }));
  const std::string after_first = c->received;
  REQUIRE(c->wait_closed(5s));
  CHECK(c->received == after_first);  // nothing more was sent
  CHECK(test::run_until(*f.loop, [&] { return f.server->connection_count() == 0; }));
  c.reset();
  f.finish();
}

TEST_CASE("server: body_idle_timeout closes a connection whose body stalls") {
  ServerFixture f;
  ServerOptions o;
  o.body_idle_timeout = 100ms;
  std::optional<Error> body_error;
  bool aborted = false;
  f.start(o, [&](ServerExchangePtr ex) {
    ex->on_abort([&] { aborted = true; });
    ex->read_body({[](std::string_view) {}, [&](Status st) {
                     if (!st) body_error = st.error();
                   }});
  });
  auto c = f.client();
  c->send("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc");
  REQUIRE(c->wait_closed(5s));
  REQUIRE(test::run_until(*f.loop, [&] { return body_error.has_value() && aborted; }));
  CHECK(body_error->code == Errc::Timeout);
  c.reset();
  f.finish();
}

TEST_CASE("server: beyond max_connections new connections get 503 and are closed") {
  ServerFixture f;
  ServerOptions o;
  o.max_connections = 1;
  f.start(o, hello_handler());
  auto first = f.client();
  first->send(get("/"));
  REQUIRE(first->wait([&] { return parse_responses(first->received).size() == 1; }));
  auto second = f.client();
  second->send(get("/"));
  REQUIRE(second->wait_closed());
  auto rs = parse_responses(second->received);
  REQUIRE(rs.size() == 1);
  CHECK(rs[0].status == 503);
  CHECK(rs[0].headers.get("connection") == "close");
  CHECK(has_json_detail(rs[0]));
  // The first connection still works; once it is gone a new one is served.
  first->send(get("/again"));
  REQUIRE(first->wait([&] { return parse_responses(first->received).size() == 2; }));
  first.reset();
  REQUIRE(test::run_until(*f.loop, [&] { return f.server->connection_count() == 0; }));
  auto third = f.client();
  third->send(get("/third"));
  REQUIRE(third->wait([&] { return parse_responses(third->received).size() == 1; }));
  CHECK(parse_responses(third->received)[0].status == 200);
  second.reset();
  third.reset();
  f.finish();
}

TEST_CASE("server: malformed requests get 400 with Connection: close / then the connection closes") {
  ServerFixture f;
  int handled = 0;
  std::vector<Error> body_errors;
  f.start({}, [&](ServerExchangePtr ex) {
    ++handled;
    ex->read_body({[](std::string_view) {}, [&](Status st) {
                     if (!st) body_errors.push_back(st.error());
                   }});
  });
  const char* cases[] = {
      "GARBAGE\r\n\r\n",
      "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  // a TLS ClientHello on the plain port
      "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
      "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
  };
  for (const char* raw : cases) {
    CAPTURE(raw);
    auto c = f.client();
    c->send(raw);
    REQUIRE(c->wait_closed());
    auto rs = parse_responses(c->received);
    REQUIRE(rs.size() == 1);
    CHECK(rs[0].status == 400);
    CHECK(rs[0].headers.get("connection") == "close");
    CHECK(has_json_detail(rs[0]));
  }
  CHECK(handled == 0);
  // A bad chunk size is found after the head was handed to the handler.
  auto c = f.client();
  c->send("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
  REQUIRE(c->wait_closed());
  auto rs = parse_responses(c->received);
  REQUIRE(rs.size() == 1);
  CHECK(rs[0].status == 400);
  REQUIRE(test::run_until(*f.loop, [&] { return body_errors.size() == 1; }));
  CHECK(body_errors[0].code == Errc::InvalidArgument);
  CHECK(handled == 1);
  c.reset();
  REQUIRE(test::run_until(*f.loop, [&] { return f.server->connection_count() == 0; }));
  f.finish();
}

TEST_CASE("server: a client that closes mid-body aborts the exchange once / without a crash") {
  ServerFixture f;
  ServerExchangePtr held;
  std::optional<Error> body_error;
  int aborts = 0;
  std::uint64_t got = 0;
  f.start({}, [&](ServerExchangePtr ex) {
    held = ex;
    ex->on_abort([&] { ++aborts; });
    ex->read_body({[&](std::string_view d) { got += d.size(); },
                   [&](Status st) {
                     if (!st) body_error = st.error();
                   }});
  });
  auto c = f.client();
  c->send("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n" + std::string(100, 'q'));
  REQUIRE(c->wait([&] { return got == 100; }));
  c.reset();  // gone mid-body
  REQUIRE(test::run_until(*f.loop, [&] { return aborts == 1 && body_error.has_value(); }));
  CHECK(body_error->code == Errc::Eof);
  CHECK(held->aborted());
  // Everything is a harmless no-op now.
  CHECK_FALSE(held->write("x"));
  CHECK_FALSE(held->write_head(ResponseHead{}));
  held->end("late");
  held->respond(200, {}, "late");
  std::string leftover;
  CHECK(held->take_upgrade(leftover) == nullptr);
  test::run_for(*f.loop, 20ms);
  CHECK(aborts == 1);
  CHECK(f.server->connection_count() == 0);
  held.reset();
  f.finish();
}

TEST_CASE("server: Expect: 100-continue is answered when the handler reads the body") {
  ServerFixture f;
  f.start({}, [&](ServerExchangePtr ex) {
    CHECK(ex->request().expect_continue == (ex->request().target == "/f"));
    auto body = std::make_shared<std::string>();
    ex->read_body({[body](std::string_view d) { body->append(d); },
                   [body, ex](Status) { ex->respond(200, {}, "got " + *body); }});
  });
  auto c = f.client();
  c->send("PUT /f HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
  REQUIRE(c->wait_contains("\r\n\r\n"));
  CHECK(c->received == "HTTP/1.1 100 Continue\r\n\r\n");
  c->send("data");
  REQUIRE(c->wait([&] { return parse_responses(c->received).size() == 2; }));
  auto rs = parse_responses(c->received);
  CHECK(rs[0].status == 100);
  CHECK(rs[1].status == 200);
  CHECK(rs[1].body == "got data");
  CHECK_FALSE(rs[1].headers.has("connection"));  // the connection stays usable
  c->send(get("/next"));
  REQUIRE(c->wait([&] { return parse_responses(c->received).size() == 3; }));
  c.reset();
  f.finish();
}

TEST_CASE("server: Expect: 100-continue refused: no 100 / the answer closes the connection") {
  ServerFixture f;
  f.start({}, [&](ServerExchangePtr ex) { ex->respond(401, {}, "no"); });
  auto c = f.client();
  c->send("PUT /f HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
  REQUIRE(c->wait_closed());
  CHECK(c->received.find("100 Continue") == std::string::npos);
  auto rs = parse_responses(c->received);
  REQUIRE(rs.size() == 1);
  CHECK(rs[0].status == 401);
  CHECK(rs[0].headers.get("connection") == "close");
  c.reset();
  f.finish();
}

TEST_CASE("server: an unread request body is discarded so keep-alive goes on") {
  ServerFixture f;
  std::vector<std::string> targets;
  f.start({}, [&](ServerExchangePtr ex) {
    targets.push_back(ex->request().target);
    ex->respond(200, {}, "fine");
  });
  auto c = f.client();
  const std::string body(300 * 1024, 'b');
  c->send("POST /1 HTTP/1.1\r\nHost: t\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n");
  REQUIRE(c->wait([&] { return parse_responses(c->received).size() == 1; }));
  c->send(body);
  c->send(get("/2"));
  REQUIRE(c->wait([&] { return parse_responses(c->received).size() == 2; }));
  CHECK(targets == std::vector<std::string>{"/1", "/2"});
  CHECK_FALSE(c->closed);
  c.reset();
  f.finish();
}

TEST_CASE("server: an unread body beyond the body limit is not discarded forever: the connection closes") {
  ServerFixture f;
  ServerOptions o;
  o.max_body_bytes = 1000;
  o.keep_alive_timeout = 0ms;  // disabled: only the body limit may close this connection
  f.start(o, [&](ServerExchangePtr ex) { ex->respond(200, {}, "early"); });
  auto c = f.client();
  c->send("POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
  REQUIRE(c->wait([&] { return parse_responses(c->received).size() == 1; }));
  CHECK_FALSE(c->closed);
  c->send("1f4\r\n" + std::string(500, 'd') + "\r\n");  // discarded, under the limit
  test::run_for(*f.loop, 30ms);
  CHECK_FALSE(c->closed);
  c->send("1f4\r\n" + std::string(500, 'd') + "\r\n1f4\r\n" + std::string(500, 'd') + "\r\n");
  REQUIRE(c->wait_closed());
  CHECK(parse_responses(c->received).size() == 1);  // no second answer: the 200 went out already
  c.reset();
  f.finish();
}

TEST_CASE("server: upgrade hands the stream over with the bytes that followed the head") {
  ServerFixture f;
  StreamPtr taken;
  std::string leftover;
  std::string echoed;
  f.start({}, [&](ServerExchangePtr ex) {
    if (ex->request().target == "/before") {
      CHECK_FALSE(ex->request().upgrade);
      std::string unused;
      CHECK(ex->take_upgrade(unused) == nullptr);
      ex->respond(200, {}, "first");
      return;
    }
    REQUIRE(ex->request().upgrade);
    taken = ex->take_upgrade(leftover);
    REQUIRE(taken);
    CHECK(ex->ended());
    CHECK(ex->take_upgrade(leftover) == nullptr);
    taken->write("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n");
    taken->write(leftover);
    taken->read_start([&](Result<std::string_view> r) {
      if (!r) return;
      echoed.append(*r);
      taken->write(*r);
    });
  });
  auto c = f.client();
  // A pipelined request first: its answer must leave before the stream changes hands.
  c->send(get("/before") +
          "GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nEXTRA-BYTES");
  REQUIRE(c->wait_contains("EXTRA-BYTES"));
  CHECK(leftover == "EXTRA-BYTES");
  const std::string first = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst";
  CHECK(c->received.rfind(first + "HTTP/1.1 101 Switching Protocols\r\n", 0) == 0);
  CHECK(f.server->connection_count() == 0);  // the server no longer owns it
  c->send("more");
  REQUIRE(c->wait_contains("EXTRA-BYTESmore"));
  CHECK(echoed == "more");
  taken.reset();
  REQUIRE(c->wait_closed());
  c.reset();
  f.finish();
}

TEST_CASE("server: an upgrade the handler declines is answered and the connection closed") {
  ServerFixture f;
  f.start({}, [&](ServerExchangePtr ex) { ex->respond(426, {}, "nope"); });
  auto c = f.client();
  c->send("GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nEXTRA");
  REQUIRE(c->wait_closed());
  auto rs = parse_responses(c->received);
  REQUIRE(rs.size() == 1);
  CHECK(rs[0].status == 426);
  CHECK(rs[0].headers.get("connection") == "close");
  c.reset();
  f.finish();
}

TEST_CASE("server: HTTP/1.0 gets a close-delimited body / or keep-alive when it asks and the length is known") {
  ServerFixture f;
  f.start({}, [&](ServerExchangePtr ex) {
    CHECK(ex->request().http_minor == 0);
    if (ex->request().target == "/stream") {
      ex->write_head(ResponseHead{});
      ex->write("abc");
      ex->end("def");
    } else {
      ex->respond(200, {}, "sized");
    }
  });
  {
    auto c = f.client();
    c->send("GET /stream HTTP/1.0\r\n\r\n");
    REQUIRE(c->wait_closed());
    CHECK(c->received == "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabcdef");
  }
  {
    auto c = f.client();
    c->send("GET /sized HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    REQUIRE(c->wait([&] { return parse_responses(c->received).size() == 1; }));
    CHECK(c->received == "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nsized");
    c->send("GET /sized HTTP/1.0\r\n\r\n");  // no keep-alive this time
    REQUIRE(c->wait_closed());
    auto rs = parse_responses(c->received);
    REQUIRE(rs.size() == 2);
    CHECK(rs[1].headers.get("connection") == "close");
  }
  f.finish();
}

TEST_CASE("server: HEAD / 204 and 304 responses carry no body") {
  ServerFixture f;
  f.start({}, [&](ServerExchangePtr ex) {
    const auto& t = ex->request().target;
    if (t == "/204") ex->respond(204, {}, "ignored");
    else if (t == "/304") ex->respond(304, {}, "");
    else ex->respond(200, {}, "body-of-get");
  });
  auto c = f.client();
  c->send("HEAD /x HTTP/1.1\r\nHost: t\r\n\r\n");
  REQUIRE(c->wait_contains("\r\n\r\n"));
  REQUIRE(c->wait([&] { return c->received.size() >= 38; }));
  CHECK(c->received == "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n");
  c->received.clear();
  c->send(get("/204") + get("/304") + get("/x"));
  REQUIRE(c->wait([&] { return parse_responses(c->received).size() == 3; }));
  auto rs = parse_responses(c->received);
  CHECK(rs[0].status == 204);
  CHECK_FALSE(rs[0].headers.has("content-length"));
  CHECK(rs[1].status == 304);
  CHECK(rs[2].body == "body-of-get");
  CHECK(c->received.find("ignored") == std::string::npos);
  c.reset();
  f.finish();
}

TEST_CASE("server: unix socket with mode 0600 / stale socket replaced / live one refused") {
  test::TempDir dir;
  const std::string path = dir.file("srv.sock");
  {
    // A socket file left behind by a process that died: bound, never unlinked.
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, path.c_str(), sizeof(sa.sun_path) - 1);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0);
    ::close(fd);
  }
  ServerFixture f;
  ServerOptions o;
  o.listen = Endpoint::unix_socket(path);
  std::string peer;
  f.start(o, [&](ServerExchangePtr ex) {
    peer = ex->peer();
    ex->respond(200, {}, "over unix");
  });
  struct stat st{};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK(S_ISSOCK(st.st_mode));
  CHECK((st.st_mode & 0777) == 0600);
  auto c = f.client();
  c->send(get("/"));
  REQUIRE(c->wait([&] { return parse_responses(c->received).size() == 1; }));
  CHECK(parse_responses(c->received)[0].body == "over unix");
  CHECK(peer == "unix");
  auto second = Server::create(*f.loop, o, hello_handler());
  REQUIRE_FALSE(second);
  CHECK(second.error().code == Errc::AlreadyExists);
  c.reset();
  f.finish();
  CHECK(::stat(path.c_str(), &st) != 0);  // removed with the server
}

TEST_CASE("server: graceful shutdown closes idle connections and lets in-flight ones finish") {
  ServerFixture f;
  ServerExchangePtr in_flight;
  f.start({}, [&](ServerExchangePtr ex) {
    if (ex->request().target == "/slow") in_flight = ex;
    else ex->respond(200, {}, "quick");
  });
  auto idle = f.client();
  idle->send(get("/quick"));
  REQUIRE(idle->wait([&] { return parse_responses(idle->received).size() == 1; }));
  auto busy = f.client();
  busy->send(get("/slow"));
  REQUIRE(test::run_until(*f.loop, [&] { return in_flight != nullptr; }));
  const Endpoint ep = f.endpoint();
  int done_calls = 0;
  bool done_ok = false;
  f.server->shutdown(5s, [&](Status st) {
    ++done_calls;
    done_ok = st.has_value();
  });
  CHECK(done_calls == 0);  // never synchronously
  REQUIRE(idle->wait_closed());
  CHECK(f.server->connection_count() == 1);
  // No longer accepting.
  {
    bool connected = false, failed = false;
    Stream::connect(*f.loop, ep, 2s, [&](Result<StreamPtr> r) { (r ? connected : failed) = true; });
    REQUIRE(test::run_until(*f.loop, [&] { return connected || failed; }));
    CHECK(failed);
  }
  test::run_for(*f.loop, 50ms);
  CHECK(done_calls == 0);
  CHECK_FALSE(busy->closed);
  in_flight->respond(200, {}, "finally");
  REQUIRE(busy->wait_closed());
  auto rs = parse_responses(busy->received);
  REQUIRE(rs.size() == 1);
  CHECK(rs[0].body == "finally");
  CHECK(rs[0].headers.get("connection") == "close");
  REQUIRE(test::run_until(*f.loop, [&] { return done_calls == 1; }));
  CHECK(done_ok);
  test::run_for(*f.loop, 20ms);
  CHECK(done_calls == 1);
  in_flight.reset();
  idle.reset();
  busy.reset();
  f.finish();
}

TEST_CASE("server: shutdown force-closes what is still running after the grace period") {
  ServerFixture f;
  ServerExchangePtr stuck;
  int aborts = 0;
  f.start({}, [&](ServerExchangePtr ex) {
    stuck = ex;
    ex->on_abort([&] { ++aborts; });
  });
  auto c = f.client();
  c->send(get("/never"));
  REQUIRE(test::run_until(*f.loop, [&] { return stuck != nullptr; }));
  int done_calls = 0;
  f.server->shutdown(100ms, [&](Status) { ++done_calls; });
  REQUIRE(test::run_until(*f.loop, [&] { return done_calls == 1; }, 5s));
  CHECK(aborts == 1);
  CHECK(stuck->aborted());
  REQUIRE(c->wait_closed());
  stuck.reset();
  c.reset();
  f.finish();
}

TEST_CASE("server: destroying the server aborts exchanges in flight and leaks nothing") {
  ServerFixture f;
  ServerExchangePtr held;
  int aborts = 0;
  f.start({}, [&](ServerExchangePtr ex) {
    held = ex;
    ex->on_abort([&] { ++aborts; });
  });
  auto c = f.client();
  c->send(get("/"));
  REQUIRE(test::run_until(*f.loop, [&] { return held != nullptr; }));
  f.server.reset();
  CHECK(aborts == 0);  // reported from the next iteration, not inside the destructor
  REQUIRE(test::run_until(*f.loop, [&] { return aborts == 1; }));
  CHECK_FALSE(held->write("x"));
  REQUIRE(c->wait_closed());
  held.reset();
  c.reset();
  f.check_no_leaks();
}

TEST_CASE("server: requests split at random points / or fed a byte at a time / parse the same") {
  ServerFixture f;
  f.start({}, [&](ServerExchangePtr ex) {
    auto body = std::make_shared<std::string>();
    ex->read_body({[body](std::string_view d) { body->append(d); },
                   [body, ex](Status st) {
                     REQUIRE(st.has_value());
                     ex->respond(200, {}, std::string(ex->request().target) + "=" + *body);
                   }});
  });
  std::string wire;
  std::vector<std::string> expected;
  std::uint32_t seed = 12345;
  auto rnd = [&](std::uint32_t n) {
    seed = seed * 1103515245u + 12345u;
    return (seed >> 8) % n;
  };
  for (int i = 0; i < 60; ++i) {
    const std::string target = "/r" + std::to_string(i);
    std::string body(rnd(3000), static_cast<char>('a' + i % 26));
    switch (i % 3) {
      case 0:
        wire += get(target);
        body.clear();
        break;
      case 1:
        wire += "POST " + target + " HTTP/1.1\r\nHost: t\r\nContent-Length: " +
                std::to_string(body.size()) + "\r\n\r\n" + body;
        break;
      default: {
        wire += "POST " + target + " HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
        std::size_t p = 0;
        while (p < body.size()) {
          std::size_t n = std::min<std::size_t>(body.size() - p, 1 + rnd(700));
          char size[16];
          std::snprintf(size, sizeof(size), "%zx", n);
          wire += std::string(size) + "\r\n" + body.substr(p, n) + "\r\n";
          p += n;
        }
        wire += "0\r\n\r\n";
      }
    }
    expected.push_back(target + "=" + body);
  }
  auto check = [&](RawClient& c) {
    REQUIRE(c.wait([&] { return parse_responses(c.received).size() == expected.size(); }));
    auto rs = parse_responses(c.received);
    for (std::size_t i = 0; i < expected.size(); ++i) CHECK(rs[i].body == expected[i]);
    CHECK_FALSE(c.closed);
  };
  {
    auto c = f.client();
    for (std::size_t p = 0; p < wire.size();) {
      std::size_t n = std::min<std::size_t>(wire.size() - p, 1 + rnd(4000));
      c->send(std::string_view(wire).substr(p, n));
      p += n;
      uv_run(f.loop->native(), UV_RUN_NOWAIT);
    }
    check(*c);
  }
  {
    // The first few requests one byte per write, each write seen by the server separately.
    const std::size_t cut = wire.find("/r4 ");
    auto c = f.client();
    for (std::size_t p = 0; p < cut; ++p) {
      c->send(std::string_view(wire).substr(p, 1));
      uv_run(f.loop->native(), UV_RUN_NOWAIT);
      uv_run(f.loop->native(), UV_RUN_NOWAIT);
    }
    c->send(std::string_view(wire).substr(cut));
    check(*c);
  }
  f.finish();
}

TEST_CASE("server: a handler may start reading the body later / bytes wait for it") {
  ServerFixture f;
  ServerExchangePtr held;
  std::string got;
  std::unique_ptr<Timer> later;
  f.start({}, [&](ServerExchangePtr ex) {
    held = ex;
    later = f.loop->create_timer([&] {
      held->read_body({[&](std::string_view d) { got.append(d); },
                       [&](Status st) {
                         CHECK(st.has_value());
                         held->respond(200, {}, std::to_string(got.size()));
                       }});
    });
    later->start(30ms);
  });
  std::string body;
  for (int i = 0; i < (1 << 20) / 8; ++i) body += "01234567";
  auto c = f.client();
  c->send("POST /late HTTP/1.1\r\nHost: t\r\nContent-Length: " + std::to_string(body.size()) +
          "\r\n\r\n" + body);
  REQUIRE(c->wait([&] { return parse_responses(c->received).size() == 1; }));
  CHECK(parse_responses(c->received)[0].body == std::to_string(body.size()));
  CHECK(got == body);
  later.reset();
  held.reset();
  c.reset();
  f.finish();
}

TEST_CASE("server: a client that pipelines without reading gets no more answers until it reads") {
  ServerFixture f;
  constexpr int kRequests = 40;
  const std::string big(1 << 20, 'p');
  int handled = 0;
  f.start({}, [&](ServerExchangePtr ex) {
    ++handled;
    ex->respond(200, {}, big);
  });
  auto c = f.client(/*start_reading=*/false);
  const std::size_t rss_base = test::current_rss_bytes();
  std::string wire;
  for (int i = 0; i < kRequests; ++i) wire += get("/p" + std::to_string(i));
  c->send(wire);
  REQUIRE(test::run_until(*f.loop, [&] { return handled > 0; }));
  test::run_for(*f.loop, 300ms);
  CHECK(handled < kRequests);  // held back by the write queue, not answered into memory
  CHECK(test::current_rss_bytes() < rss_base + (64u << 20));
  std::size_t responses = 0;
  std::size_t consumed_total = 0;
  std::string pending;
  c->stream->read_start([&](Result<std::string_view> r) {
    if (!r) return;
    pending.append(*r);
    std::size_t used = 0;
    responses += parse_responses(pending, false, false, &used).size();
    consumed_total += used;
    pending.erase(0, used);
  });
  REQUIRE(c->wait([&] { return responses == kRequests; }, 60s));
  CHECK(handled == kRequests);
  c.reset();
  f.finish();
}

TEST_CASE("server: a client that half-closes after its request still gets the whole answer") {
  ServerFixture f;
  const std::string big(32 << 20, 'h');  // more than loopback socket buffers absorb
  ServerOptions o;
  o.write_high_watermark = 64 << 20;  // so the connection goes idle with the answer still queued
  f.start(o, [&](ServerExchangePtr ex) { ex->respond(200, {}, big); });
  std::atomic<bool> done{false};
  std::string response;
  const Endpoint ep = f.endpoint();
  std::thread client([&] {
    test::BlockingSocket s(ep);
    if (s.ok() && s.send_all(get("/half"))) {
      ::shutdown(s.fd(), SHUT_WR);
      response = s.read_to_end();
    }
    done = true;
  });
  const bool finished = test::run_until(*f.loop, [&] { return done.load(); }, 30s);
  client.join();
  REQUIRE(finished);
  auto rs = parse_responses(response, true);
  REQUIRE(rs.size() == 1);
  CHECK(rs[0].body.size() == big.size());
  CHECK(test::run_until(*f.loop, [&] { return f.server->connection_count() == 0; }));
  f.finish();
}

TEST_CASE("server: a client that resets during a large response aborts the exchange") {
  ServerFixture f;
  ServerExchangePtr held;
  int aborts = 0;
  bool blocked = false;
  std::string chunk(64 * 1024, 'r');
  f.start({}, [&](ServerExchangePtr ex) {
    held = ex;
    ex->on_abort([&] { ++aborts; });
    ex->write_head(ResponseHead{});
    while (ex->write(chunk)) {
    }
    blocked = true;
  });
  test::BlockingSocket s(f.endpoint());
  REQUIRE(s.ok());
  REQUIRE(s.send_all(get("/big")));
  REQUIRE(test::run_until(*f.loop, [&] { return blocked; }));
  linger lg{1, 0};
  ::setsockopt(s.fd(), SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  s.close();  // RST
  REQUIRE(test::run_until(*f.loop, [&] { return aborts == 1; }));
  CHECK(held->aborted());
  CHECK_FALSE(held->ended());
  CHECK_FALSE(held->write(chunk));
  CHECK(test::run_until(*f.loop, [&] { return f.server->connection_count() == 0; }));
  held.reset();
  f.finish();
}

TEST_CASE("server: a head written alone goes out on its own / large bodies and chunks are not copied") {
  ServerFixture f;
  ServerExchangePtr held;
  std::unique_ptr<Timer> later;
  const std::string big(200 * 1024, 'B');
  f.start({}, [&](ServerExchangePtr ex) {
    if (ex->request().target == "/big") {
      ex->respond(200, {}, big);
      return;
    }
    if (ex->request().target == "/chunks") {
      ex->write_head(ResponseHead{});
      ex->write(big);
      ex->write("small");
      ex->end(big);
      return;
    }
    held = ex;
    ResponseHead h;
    h.status = 201;
    h.reason = "Made";
    h.headers.add("Content-Length", "5");
    h.headers.add("X-Evil", "a\r\nInjected: yes");  // dropped, never split the response
    h.headers.add("Connection", "keep-alive, foo");  // framing headers are ours
    ex->write_head(h);
    later = f.loop->create_timer([&] { held->end("hello"); });
    later->start(100ms);
  });
  auto c = f.client();
  c->send(get("/slow"));
  REQUIRE(c->wait_contains("\r\n\r\n"));
  CHECK(c->received == "HTTP/1.1 201 Made\r\nContent-Length: 5\r\n\r\n");  // before the body
  REQUIRE(c->wait([&] { return parse_responses(c->received).size() == 1; }));
  CHECK(parse_responses(c->received)[0].body == "hello");
  c->send(get("/big") + get("/chunks"));
  REQUIRE(c->wait([&] { return parse_responses(c->received).size() == 3; }));
  auto rs = parse_responses(c->received);
  CHECK(rs[1].body == big);
  CHECK(rs[2].chunked);
  CHECK(rs[2].body == big + "small" + big);
  later.reset();
  held.reset();
  c.reset();
  f.finish();
}

}  // TEST_SUITE
