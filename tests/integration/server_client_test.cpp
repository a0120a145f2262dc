// Server and HttpClient against each other over loopback and unix sockets: the two halves of
// the data plane must agree on keep-alive, pipelining-free reuse, both body framings, streaming
// with bounded memory and the upgrade hand-off.

#include <doctest/doctest.h>

#include <string>

#include "support/loop_runner.hpp"
#include "terminals/http_client.hpp"
#include "terminals/server.hpp"

using namespace terminals;
using namespace std::chrono_literals;

namespace {

// An echo server: answers each request with its method, target and body; chunked when the
// request was chunked, with Content-Length otherwise.
ServerPtr echo_server(Loop& loop, Endpoint where) {
  ServerOptions opts;
  opts.listen = std::move(where);
  opts.max_body_bytes = 2ull << 30;
  return Server::create(loop, opts, [](ServerExchangePtr ex) {
    auto body = std::make_shared<std::string>();
    ex->read_body({[body](std::string_view d) { body->append(d); },
                   [ex, body](Status st) {
                     if (!st) return;
                     const RequestHead& r = ex->request();
                     std::string out = r.method + " " + r.target + " " + *body;
                     if (r.chunked) {
                       ResponseHead h;
                       h.headers.add("X-Echo", "chunked");
                       ex->write_head(h);
                       ex->write(out.substr(0, out.size() / 2));
                       ex->end(out.substr(out.size() / 2));
                     } else {
                       ex->respond(200, {{"X-Echo", "length"}}, out);
                     }
                   }});
  }).value();
}

}  // namespace

TEST_SUITE("integration") {

TEST_CASE("server and client: keep-alive reuse over TCP and unix sockets") {
  test::LoopFixture f;
  test::TempDir dir;
  for (Endpoint where : {Endpoint::tcp("127.0.0.1", 0), Endpoint::unix_socket(dir.file("e.sock"))}) {
    CAPTURE(where.to_string());
    auto server = echo_server(*f.loop, where);
    auto client = HttpClient::create(*f.loop);
    int done = 0;
    for (int i = 0; i < 20; ++i) {
      RequestHead h;
      h.target = "/r/" + std::to_string(i);
      client->fetch(server->local_endpoint(), std::move(h), "", [&, i](Result<FetchResponse> r) {
        REQUIRE(r);
        CHECK(r->head.status == 200);
        CHECK(r->body == "GET /r/" + std::to_string(i) + " ");
        ++done;
      });
      REQUIRE(test::run_until(*f.loop, [&] { return done == i + 1; }));
    }
    CHECK(client->connections_opened() == 1);
    CHECK(server->connection_count() == 1);
    client.reset();
    server.reset();
  }
  f.check_no_leaks();
}

TEST_CASE("server and client: chunked bodies both ways, streamed with backpressure") {
  test::LoopFixture f;
  auto server = echo_server(*f.loop, Endpoint::tcp("127.0.0.1", 0));
  auto client = HttpClient::create(*f.loop);
  RequestHead h;
  h.method = "POST";
  h.target = "/upload";
  std::optional<ResponseHead> head;
  auto ex = client->request(server->local_endpoint(), std::move(h), [&](Result<ResponseHead> r) {
    REQUIRE(r);
    head = std::move(r).value();
  });
  std::string sent;
  for (int i = 0; i < 100; ++i) {
    std::string piece = "piece-" + std::to_string(i) + ";";
    sent += piece;
    ex->write(piece);
  }
  ex->end();
  REQUIRE(test::run_until(*f.loop, [&] { return head.has_value(); }));
  CHECK(head->chunked);
  CHECK(head->headers.get("x-echo").value() == "chunked");
  std::string got;
  bool ended = false;
  ex->read_body({[&](std::string_view d) { got.append(d); }, [&](Status st) { ended = st.has_value(); }});
  REQUIRE(test::run_until(*f.loop, [&] { return ended; }));
  CHECK(got == "POST /upload " + sent);
  ex.reset();
  client.reset();
  server.reset();
  f.check_no_leaks();
}

TEST_CASE("server and client: 512 MiB through both with flat memory") {
  test::LoopFixture f;
  // The server counts the upload and answers with the same amount; the client produces only
  // when told it may (drain) and pauses reading the answer every other chunk.
  constexpr std::uint64_t kTotal = 512ull << 20;
  ServerOptions opts;
  opts.listen = Endpoint::tcp("127.0.0.1", 0);
  opts.max_body_bytes = kTotal;
  auto server = Server::create(*f.loop, opts, [&](ServerExchangePtr ex) {
    auto count = std::make_shared<std::uint64_t>(0);
    ex->read_body({[count](std::string_view d) { *count += d.size(); },
                   [ex, count, loop = f.loop.get()](Status st) {
                     REQUIRE(st);
                     ResponseHead rh;
                     rh.content_length = *count;
                     rh.headers.add("Content-Length", std::to_string(*count));
                     ex->write_head(rh);
                     // Produce the answer under backpressure.
                     auto left = std::make_shared<std::uint64_t>(*count);
                     auto chunk = std::make_shared<std::string>(256 * 1024, 'z');
                     auto pump = std::make_shared<MoveOnlyFunction<void()>>();
                     *pump = [ex, left, chunk, loop] {
                       while (*left > 0) {
                         auto n = std::min<std::uint64_t>(*left, chunk->size());
                         *left -= n;
                         bool more = ex->write(std::string_view(*chunk).substr(0, n));
                         if (*left == 0) {
                           ex->end();
                           // Breaks ex -> drain handler -> pump -> ex, once this call (maybe
                           // from that very handler) has returned.
                           loop->defer([ex] { ex->set_drain_handler(nullptr); });
                           return;
                         }
                         if (!more) return;  // resumes in the drain handler
                       }
                     };
                     ex->set_drain_handler([pump] { (*pump)(); });
                     (*pump)();
                   }});
  }).value();

  auto client = HttpClient::create(*f.loop);
  RequestHead h;
  h.method = "PUT";
  h.target = "/big";
  h.headers.add("Content-Length", std::to_string(kTotal));
  std::optional<ResponseHead> head;
  auto ex = client->request(server->local_endpoint(), std::move(h), [&](Result<ResponseHead> r) {
    REQUIRE(r);
    head = std::move(r).value();
  });
  const std::size_t rss_before = test::current_rss_bytes();
  std::size_t peak = rss_before;
  std::string chunk(256 * 1024, 'u');
  std::uint64_t sent = 0;
  MoveOnlyFunction<void()> produce = [&] {
    while (sent < kTotal) {
      sent += chunk.size();
      bool more = ex->write(chunk);
      peak = std::max(peak, test::current_rss_bytes());
      if (sent >= kTotal) {
        ex->end();
        return;
      }
      if (!more) return;
    }
  };
  ex->set_drain_handler([&] { produce(); });
  produce();
  REQUIRE(test::run_until(*f.loop, [&] { return head.has_value(); }, 120s));
  CHECK(head->content_length.value() == kTotal);
  std::uint64_t received = 0;
  bool ended = false;
  int reads = 0;
  ex->read_body({[&](std::string_view d) {
                   received += d.size();
                   if (++reads % 2 == 0) {
                     // A slow consumer: pause, resume on the next loop turn.
                     ex->pause_body();
                     f.loop->defer([&] { ex->resume_body(); });
                   }
                   if (reads % 64 == 0) peak = std::max(peak, test::current_rss_bytes());
                 },
                 [&](Status st) { ended = st.has_value(); }});
  REQUIRE(test::run_until(*f.loop, [&] { return ended; }, 120s));
  CHECK(received == kTotal);
#if !defined(__SANITIZE_ADDRESS__)
  CHECK(peak - rss_before < (64u << 20));
#endif
  ex.reset();
  client.reset();
  server.reset();
  f.check_no_leaks();
}

TEST_CASE("server and client: upgrade hand-off with leftover bytes on both sides") {
  test::LoopFixture f;
  StreamPtr server_side;
  auto server = Server::create(*f.loop, {.listen = Endpoint::tcp("127.0.0.1", 0)}, [&](ServerExchangePtr ex) {
    REQUIRE(ex->request().upgrade);
    std::string leftover;
    server_side = ex->take_upgrade(leftover);
    REQUIRE(server_side);
    // The 101 and the first bytes of the new protocol go out in one write, so the client's
    // parser sees bytes after the head: those must come back to it as leftover.
    server_side->write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\nhello:" +
                       leftover);
    Stream* s = server_side.get();
    s->read_start([s](Result<std::string_view> d) {
      if (d) s->write(*d);
    });
  }).value();
  auto client = HttpClient::create(*f.loop);
  RequestHead h;
  h.target = "/tunnel";
  h.headers.add("Connection", "Upgrade");
  h.headers.add("Upgrade", "echo");
  bool got_head = false;
  auto ex = client->request(server->local_endpoint(), std::move(h), [&](Result<ResponseHead> r) {
    REQUIRE(r);
    CHECK(r->status == 101);
    got_head = true;
  });
  REQUIRE(test::run_until(*f.loop, [&] { return got_head; }));
  std::string leftover;
  StreamPtr tunnel = ex->take_upgrade(leftover);
  REQUIRE(tunnel);
  std::string got = leftover;
  tunnel->read_start([&](Result<std::string_view> d) {
    if (d) got.append(*d);
  });
  tunnel->write("ping");
  REQUIRE(test::run_until(*f.loop, [&] { return got == "hello:ping"; }));
  tunnel.reset();
  server_side.reset();
  ex.reset();
  client.reset();
  server.reset();
  f.check_no_leaks();
}

TEST_CASE("server and client: limits surface to the client as status codes") {
  test::LoopFixture f;
  ServerOptions opts;
  opts.listen = Endpoint::tcp("127.0.0.1", 0);
  opts.max_body_bytes = 1024;
  opts.max_header_bytes = 2048;
  auto server = Server::create(*f.loop, opts, [](ServerExchangePtr ex) {
    ex->read_body({[](std::string_view) {}, [ex](Status st) {
                     if (st) ex->respond(200, {}, "ok");
                   }});
  }).value();
  auto client = HttpClient::create(*f.loop);
  int status_big_body = 0, status_big_head = 0;
  RequestHead a;
  a.method = "POST";
  client->fetch(server->local_endpoint(), a, std::string(4096, 'b'), [&](Result<FetchResponse> r) {
    REQUIRE(r);
    status_big_body = r->head.status;
  });
  RequestHead b;
  b.headers.add("X-Big", std::string(4096, 'h'));
  client->fetch(server->local_endpoint(), b, "", [&](Result<FetchResponse> r) {
    REQUIRE(r);
    status_big_head = r->head.status;
  });
  REQUIRE(test::run_until(*f.loop, [&] { return status_big_body && status_big_head; }));
  CHECK(status_big_body == 413);
  CHECK(status_big_head == 431);
  client.reset();
  server.reset();
  f.check_no_leaks();
}

}  // TEST_SUITE
