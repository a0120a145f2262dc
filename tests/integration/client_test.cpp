// HttpClient against a scripted upstream on the same loop: a Listener whose connections parse
// requests with the library's own parser and answer with exact bytes, so every framing,
// keep-alive and failure case is under the test's control.

#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "http/parser.hpp"
#include "support/loop_runner.hpp"
#include "terminals/http_client.hpp"
#include "terminals/loop.hpp"
#include "uv/uv_stream.hpp"

using namespace terminals;
using namespace std::chrono_literals;

namespace {

class Upstream {
 public:
  struct Conn : detail::HttpParser::Listener {
    Upstream* server = nullptr;
    StreamPtr stream;
    std::unique_ptr<detail::HttpParser> parser;
    RequestHead head;
    std::string body;
    bool raw = false;  // after an upgrade: bytes go to Upstream::on_raw
    bool eof = false;
    int requests = 0;

    void on_request_head(RequestHead&& h) override {
      head = std::move(h);
      body.clear();
    }
    void on_body(std::string_view d) override {
      if (server->on_body) server->on_body(*this, d);
      else body.append(d);
    }
    void send(std::string_view bytes) { stream->write(bytes); }
    void close() { stream->close(); }
  };
  using Handler = std::function<void(Conn&)>;

  Upstream(Loop& loop, const Endpoint& where, Handler handler)
      : loop_(loop), handler_(std::move(handler)) {
    listener_ = detail::Listener::create(loop, where, {}, [this](Result<StreamPtr> s) {
      REQUIRE(s);
      accept(std::move(s).value());
    }).value();
  }
  ~Upstream() { shut(); }

  void shut() {
    listener_.reset();
    for (auto& c : conns) c->stream->close();
  }
  Endpoint endpoint() const { return listener_->local_endpoint(); }
  int eofs() const {
    int n = 0;
    for (auto& c : conns) n += c->eof ? 1 : 0;
    return n;
  }

  int accepted = 0;
  int requests = 0;
  int most_in_one_read = 0;  // requests that arrived in a single read (pipelining)
  std::vector<RequestHead> heads;  // every request head, in arrival order
  std::function<void(Conn&, std::string_view)> on_body;  // streams request bodies if set
  std::function<void(Conn&, std::string_view)> on_raw;
  std::vector<std::unique_ptr<Conn>> conns;

 private:
  void accept(StreamPtr stream) {
    ++accepted;
    auto c = std::make_unique<Conn>();
    c->server = this;
    c->stream = std::move(stream);
    c->parser = std::make_unique<detail::HttpParser>(detail::HttpParser::Kind::Request,
                                                      detail::HttpParser::Limits{}, *c);
    Conn* conn = c.get();
    conns.push_back(std::move(c));
    conn->stream->read_start(
        [this, conn](Result<std::string_view> r) { on_read(conn, std::move(r)); });
  }

  void on_read(Conn* c, Result<std::string_view> r) {
    if (!r) {
      c->eof = true;
      return;
    }
    std::string_view data = *r;
    int in_this_read = 0;
    while (!data.empty() && c->stream->is_open()) {
      if (c->raw) {
        if (on_raw) on_raw(*c, data);
        return;
      }
      auto out = c->parser->execute(data);
      if (out.state == detail::HttpParser::State::Error) {
        c->close();
        return;
      }
      if (out.state == detail::HttpParser::State::Ok) return;
      data.remove_prefix(out.consumed);
      ++requests;
      ++c->requests;
      most_in_one_read = std::max(most_in_one_read, ++in_this_read);
      heads.push_back(c->head);
      if (out.state == detail::HttpParser::State::Upgrade) c->raw = true;
      else c->parser->resume();
      handler_(*c);
    }
  }

  Loop& loop_;
  Handler handler_;
  std::unique_ptr<detail::Listener> listener_;
};

std::string ok_response(std::string_view body, std::string_view extra_headers = {}) {
  return "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" +
         std::string(extra_headers) + "\r\n" + std::string(body);
}

std::string chunked_response(const std::vector<std::string>& chunks) {
  std::string r = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
  char size[32];
  for (const auto& c : chunks) {
    std::snprintf(size, sizeof(size), "%zx\r\n", c.size());
    r += size;
    r += c;
    r += "\r\n";
  }
  r += "0\r\n\r\n";
  return r;
}

RequestHead get(std::string target = "/") {
  RequestHead h;
  h.target = std::move(target);
  return h;
}

Result<FetchResponse> fetch_now(Loop& loop, HttpClient& client, const Endpoint& where,
                                RequestHead head = get(), std::string body = {},
                                std::size_t max_body = 16 << 20) {
  std::optional<Result<FetchResponse>> got;
  client.fetch(where, std::move(head), std::move(body),
               [&](Result<FetchResponse> r) { got.emplace(std::move(r)); }, max_body);
  CHECK_FALSE(got.has_value());  // never inside the call
  REQUIRE(test::run_until(loop, [&] { return got.has_value(); }));
  return std::move(*got);
}

/// One request driven through ClientExchange, recording what arrives.
struct Recorder {
  ClientExchangePtr exchange;
  std::optional<Result<ResponseHead>> head;
  std::string body;
  std::optional<Status> end;
  bool read_in_head_callback = true;

  void start(HttpClient& client, const Endpoint& where, RequestHead h = get()) {
    exchange = client.request(where, std::move(h), [this](Result<ResponseHead> r) {
      head.emplace(std::move(r));
      if (*head && read_in_head_callback) read();
    });
  }
  void read() {
    exchange->read_body({[this](std::string_view d) { body.append(d); },
                         [this](Status s) {
                           CHECK_FALSE(end.has_value());  // exactly once
                           end.emplace(std::move(s));
                         }});
  }
};

const Errc kNoError = Errc::Internal;
Errc code_of(const Status& s) { return s ? kNoError : s.error().code; }
template <class T>
Errc code_of(const Result<T>& r) {
  return r ? kNoError : r.error().code;
}

}  // namespace

TEST_SUITE("integration") {

TEST_CASE("client: sequential requests reuse one keep-alive connection") {
  test::LoopFixture f;
  Upstream up(*f.loop, Endpoint::tcp("127.0.0.1", 0), [](Upstream::Conn& c) {
    // Alternate the two framings: both must leave the connection reusable.
    if (c.requests % 2) c.send(ok_response("reply " + std::to_string(c.requests)));
    else c.send(chunked_response({"reply ", std::to_string(c.requests)}));
  });
  auto client = HttpClient::create(*f.loop);
  for (int i = 1; i <= 20; ++i) {
    auto r = fetch_now(*f.loop, *client, up.endpoint(), get("/n/" + std::to_string(i)));
    REQUIRE(r);
    CHECK(r->head.status == 200);
    CHECK(r->body == "reply " + std::to_string(i));
  }
  CHECK(client->connections_opened() == 1);
  CHECK(up.accepted == 1);
  CHECK(client->idle_connection_count() == 1);
  REQUIRE(up.heads.size() == 20);
  CHECK(up.heads[0].headers.get("host") == "127.0.0.1:" + std::to_string(up.endpoint().port));
  CHECK(up.heads[19].target == "/n/20");
  client.reset();
  CHECK(test::run_until(*f.loop, [&] { return up.eofs() == 1; }));  // pool closed with the client
  up.shut();
  f.check_no_leaks();
}

TEST_CASE("client: a request started from on_end reuses the connection just released") {
  test::LoopFixture f;
  Upstream up(*f.loop, Endpoint::tcp("127.0.0.1", 0),
              [](Upstream::Conn& c) { c.send(ok_response("x")); });
  auto client = HttpClient::create(*f.loop);
  int done = 0;
  std::function<void()> next = [&] {
    client->fetch(up.endpoint(), get(), {}, [&](Result<FetchResponse> r) {
      REQUIRE(r);
      if (++done < 10) next();
    });
  };
  next();
  CHECK(test::run_until(*f.loop, [&] { return done == 10; }));
  CHECK(client->connections_opened() == 1);
  client.reset();
  up.shut();
  f.check_no_leaks();
}

TEST_CASE("client: keep-alive over a unix socket sends Host: localhost") {
  test::LoopFixture f;
  test::TempDir dir;
  Upstream up(*f.loop, Endpoint::unix_socket(dir.file("up.sock")),
              [](Upstream::Conn& c) { c.send(ok_response("unix")); });
  auto client = HttpClient::create(*f.loop);
  for (int i = 0; i < 3; ++i) {
    auto r = fetch_now(*f.loop, *client, up.endpoint());
    REQUIRE(r);
    CHECK(r->body == "unix");
  }
  CHECK(client->connections_opened() == 1);
  CHECK(up.heads.at(0).headers.get("host") == "localhost");
  client.reset();
  up.shut();
  f.check_no_leaks();
}

TEST_CASE("client: a response with Connection: close is not pooled") {
  test::LoopFixture f;
  Upstream up(*f.loop, Endpoint::tcp("127.0.0.1", 0),
              [](Upstream::Conn& c) { c.send(ok_response("bye", "Connection: close\r\n")); });
  auto client = HttpClient::create(*f.loop);
  for (int i = 0; i < 2; ++i) {
    auto r = fetch_now(*f.loop, *client, up.endpoint());
    REQUIRE(r);
    CHECK(r->body == "bye");
    CHECK(client->idle_connection_count() == 0);
  }
  CHECK(client->connections_opened() == 2);
  CHECK(test::run_until(*f.loop, [&] { return up.eofs() == 2; }));  // the client closed both
  client.reset();
  up.shut();
  f.check_no_leaks();
}

TEST_CASE("client: a request saying Connection: close is not pooled either") {
  test::LoopFixture f;
  Upstream up(*f.loop, Endpoint::tcp("127.0.0.1", 0),
              [](Upstream::Conn& c) { c.send(ok_response("x")); });
  auto client = HttpClient::create(*f.loop);
  auto head = get();
  head.headers.add("Connection", "close");
  REQUIRE(fetch_now(*f.loop, *client, up.endpoint(), std::move(head)));
  CHECK(client->idle_connection_count() == 0);
  REQUIRE(fetch_now(*f.loop, *client, up.endpoint()));
  CHECK(client->connections_opened() == 2);
  client.reset();
  up.shut();
  f.check_no_leaks();
}

TEST_CASE("client: no reuse after an error or a cancel or with a body left unread") {
  test::LoopFixture f;
  std::string mode;
  Upstream up(*f.loop, Endpoint::tcp("127.0.0.1", 0), [&](Upstream::Conn& c) {
    if (mode == "malformed") c.send("HTTP/1.1 2x0 What\r\n\r\n");
    else if (mode == "partial") c.send("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nfirst");
    else c.send(ok_response("fine"));
  });
  auto client = HttpClient::create(*f.loop);

  mode = "malformed";
  auto r = fetch_now(*f.loop, *client, up.endpoint());
  CHECK(code_of(r) == Errc::UpstreamProtocol);
  CHECK(client->idle_connection_count() == 0);

  mode = "partial";
  {
    Recorder rec;
    rec.exchange = client->request(up.endpoint(), get(), [&](Result<ResponseHead> h) {
      rec.head.emplace(std::move(h));
      rec.read();
    });
    // Cancel on the first body bytes: the rest never arrives on this connection.
    CHECK(test::run_until(*f.loop, [&] { return !rec.body.empty(); }));
    rec.exchange->cancel();
    CHECK_FALSE(rec.end.has_value());  // not synchronously
    CHECK(test::run_until(*f.loop, [&] { return rec.end.has_value(); }));
    CHECK(code_of(*rec.end) == Errc::Cancelled);
  }
  {
    // The head arrives; the exchange is dropped with its body never read.
    Recorder rec;
    rec.read_in_head_callback = false;
    rec.start(*client, up.endpoint());
    CHECK(test::run_until(*f.loop, [&] { return rec.head.has_value(); }));
    rec.exchange.reset();
  }
  CHECK(test::run_until(*f.loop, [&] { return up.eofs() == 3; }));
  CHECK(client->idle_connection_count() == 0);

  mode = "fine";
  REQUIRE(fetch_now(*f.loop, *client, up.endpoint()));
  CHECK(client->connections_opened() == 4);
  CHECK(client->idle_connection_count() == 1);
  client.reset();
  up.shut();
  f.check_no_leaks();
}

TEST_CASE("client: an idle connection the server closed is dropped from the pool") {
  test::LoopFixture f;
  Upstream up(*f.loop, Endpoint::tcp("127.0.0.1", 0), [](Upstream::Conn& c) {
    c.send(ok_response("once"));
    c.close();  // says keep-alive, closes anyway
  });
  auto client = HttpClient::create(*f.loop);
  REQUIRE(fetch_now(*f.loop, *client, up.endpoint()));
  CHECK(test::run_until(*f.loop, [&] { return client->idle_connection_count() == 0; }));
  auto r = fetch_now(*f.loop, *client, up.endpoint());
  REQUIRE(r);
  CHECK(r->body == "once");
  CHECK(client->connections_opened() == 2);
  client.reset();
  up.shut();
  f.check_no_leaks();
}

TEST_CASE("client: a request on a connection the server just closed is retried once") {
  test::LoopFixture f;
  Upstream up(*f.loop, Endpoint::tcp("127.0.0.1", 0), [](Upstream::Conn& c) {
    c.send(ok_response("reply"));
    c.close();
  });
  auto client = HttpClient::create(*f.loop);
  // The second request starts from the first one's completion, before the loop has read the
  // server's FIN: it goes out on the dead connection, fails, and is sent again.
  std::optional<Result<FetchResponse>> second;
  std::string method = "GET";
  auto run_pair = [&] {
    second.reset();
    client->fetch(up.endpoint(), get(), {}, [&](Result<FetchResponse> first) {
      REQUIRE(first);
      CHECK(client->idle_connection_count() == 1);
      RequestHead h = get();
      h.method = method;
      client->fetch(up.endpoint(), std::move(h), method == "GET" ? "" : "data",
                    [&](Result<FetchResponse> r) { second.emplace(std::move(r)); });
    });
    REQUIRE(test::run_until(*f.loop, [&] { return second.has_value(); }));
  };
  SUBCASE("GET is retried") {
    run_pair();
    REQUIRE(*second);
    CHECK((*second)->body == "reply");
    CHECK(client->connections_opened() == 2);
    CHECK(up.requests == 2);
  }
  SUBCASE("PUT with a body given whole is retried") {
    method = "PUT";
    run_pair();
    REQUIRE(*second);
    CHECK(client->connections_opened() == 2);
  }
  SUBCASE("POST is not retried") {
    method = "POST";
    run_pair();
    CHECK(code_of(*second) == Errc::Io);
    CHECK(client->connections_opened() == 1);
  }
  client.reset();
  up.shut();
  f.check_no_leaks();
}

TEST_CASE("client: the pool keeps at most max_idle_per_upstream connections") {
  test::LoopFixture f;
  Upstream up(*f.loop, Endpoint::tcp("127.0.0.1", 0),
              [](Upstream::Conn& c) { c.send(ok_response("p")); });
  ClientOptions opts;
  opts.max_idle_per_upstream = 2;
  auto client = HttpClient::create(*f.loop, opts);
  int done = 0;
  for (int i = 0; i < 4; ++i) {
    client->fetch(up.endpoint(), get(), {}, [&](Result<FetchResponse> r) {
      CHECK(r);
      ++done;
    });
  }
  CHECK(test::run_until(*f.loop, [&] { return done == 4; }));
  CHECK(client->connections_opened() == 4);
  CHECK(client->idle_connection_count() == 2);
  CHECK(test::run_until(*f.loop, [&] { return up.eofs() == 2; }));
  client.reset();
  up.shut();
  f.check_no_leaks();
}

TEST_CASE("client: idle connections are closed after idle_timeout") {
  test::LoopFixture f;
  Upstream up(*f.loop, Endpoint::tcp("127.0.0.1", 0),
              [](Upstream::Conn& c) { c.send(ok_response("i")); });
  ClientOptions opts;
  opts.idle_timeout = 50ms;
  auto client = HttpClient::create(*f.loop, opts);
  REQUIRE(fetch_now(*f.loop, *client, up.endpoint()));
  CHECK(client->idle_connection_count() == 1);
  CHECK(test::run_until(*f.loop, [&] { return client->idle_connection_count() == 0; }));
  CHECK(test::run_until(*f.loop, [&] { return up.eofs() == 1; }));
  client.reset();
  up.shut();
  f.check_no_leaks();
}

TEST_CASE("client: content-length and chunked and close-delimited responses") {
  test::LoopFixture f;
  std::string reply;
  bool close_after = false;
  Upstream up(*f.loop, Endpoint::tcp("127.0.0.1", 0), [&](Upstream::Conn& c) {
    c.send(reply);
    if (close_after) c.close();
  });
  auto client = HttpClient::create(*f.loop);
  std::string expected;
  bool reusable = true;
  SUBCASE("content-length") {
    reply = ok_response("exactly this");
    expected = "exactly this";
  }
  SUBCASE("chunked with an extension and trailers") {
    reply = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
    expected = "hello world";
  }
  SUBCASE("HTTP/1.0 without framing runs to the close") {
    reply = "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end";
    close_after = true;
    expected = "until the end";
    reusable = false;
  }
  SUBCASE("HTTP/1.1 without framing runs to the close") {
    reply = "HTTP/1.1 200 OK\r\n\r\nuntil the end, 1.1";
    close_after = true;
    expected = "until the end, 1.1";
    reusable = false;
  }
  Recorder rec;
  rec.start(*client, up.endpoint());
  CHECK(test::run_until(*f.loop, [&] { return rec.end.has_value(); }));
  REQUIRE(rec.head.has_value());
  REQUIRE(*rec.head);
  CHECK(code_of(*rec.end) == kNoError);
  CHECK(rec.body == expected);
  CHECK(client->idle_connection_count() == (reusable ? 1u : 0u));
  rec.exchange.reset();
  client.reset();
  up.shut();
  f.check_no_leaks();
}

TEST_CASE("client: a connection closed mid-body ends the body with an error exactly once") {
  test::LoopFixture f;
  Upstream up(*f.loop, Endpoint::tcp("127.0.0.1", 0), [](Upstream::Conn& c) {
    c.send("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b");
    c.close();
  });
  auto client = HttpClient::create(*f.loop);
  Recorder rec;
  rec.start(*client, up.endpoint());
  CHECK(test::run_until(*f.loop, [&] { return rec.end.has_value(); }));
  CHECK(rec.body == "only ten b");
  CHECK(code_of(*rec.end) == Errc::UpstreamProtocol);
  test::run_for(*f.loop, 20ms);  // and nothing more arrives
  rec.exchange.reset();
  client.reset();
  up.shut();
  f.check_no_leaks();
}

TEST_CASE("client: HEAD response with Content-Length has no body and keeps the connection") {
  test::LoopFixture f;
  Upstream up(*f.loop, Endpoint::tcp("127.0.0.1", 0), [](Upstream::Conn& c) {
    if (c.head.method == "HEAD") c.send("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
    else c.send(ok_response("after head"));
  });
  auto client = HttpClient::create(*f.loop);
  RequestHead head = get();
  head.method = "HEAD";
  auto r = fetch_now(*f.loop, *client, up.endpoint(), std::move(head));
  REQUIRE(r);
  CHECK(r->head.content_length == 1000u);
  CHECK(r->body.empty());
  auto r2 = fetch_now(*f.loop, *client, up.endpoint());
  REQUIRE(r2);
  CHECK(r2->body == "after head");
  CHECK(client->connections_opened() == 1);
  client.reset();
  up.shut();
  f.check_no_leaks();
}

TEST_CASE("client: 1xx interim responses are skipped") {
  test::LoopFixture f;
  Upstream up(*f.loop, Endpoint::tcp("127.0.0.1", 0), [](Upstream::Conn& c) {
    c.send("HTTP/1.1 100 Continue\r\n\r\n");
    c.send("HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n");
    c.send(ok_response("final"));
  });
  auto client = HttpClient::create(*f.loop);
  auto r = fetch_now(*f.loop, *client, up.endpoint());
  REQUIRE(r);
  CHECK(r->head.status == 200);
  CHECK(r->body == "final");
  CHECK(client->idle_connection_count() == 1);
  client.reset();
  up.shut();
  f.check_no_leaks();
}

TEST_CASE("client: 101 hands over the stream and the bytes after the head") {
  test::LoopFixture f;
  Upstream up(*f.loop, Endpoint::tcp("127.0.0.1", 0), [](Upstream::Conn& c) {
    c.send("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
           "sent-with-the-head");
  });
  up.on_raw = [](Upstream::Conn& c, std::string_view d) { c.send("echo:" + std::string(d)); };
  auto client = HttpClient::create(*f.loop);
  RequestHead head = get("/ws");
  head.headers.add("Connection", "Upgrade");
  head.headers.add("Upgrade", "echo");
  StreamPtr tunnel;
  std::string leftover, echoed;
  int status = 0;
  auto ex = client->request(up.endpoint(), std::move(head), [&](Result<ResponseHead> r) {
    REQUIRE(r);
    status = r->status;
    CHECK(r->upgrade);
  });
  CHECK(test::run_until(*f.loop, [&] { return status != 0; }));
  CHECK(status == 101);
  tunnel = ex->take_upgrade(leftover);
  REQUIRE(tunnel);
  CHECK(leftover == "sent-with-the-head");
  std::string again;
  CHECK(ex->take_upgrade(again) == nullptr);  // handed over once
  tunnel->read_start([&](Result<std::string_view> d) {
    if (d) echoed.append(*d);
  });
  tunnel->write("ping");
  CHECK(test::run_until(*f.loop, [&] { return echoed == "echo:ping"; }));
  ex.reset();
  CHECK(client->idle_connection_count() == 0);
  CHECK(client->connections_opened() == 1);
  tunnel.reset();
  client.reset();
  up.shut();
  f.check_no_leaks();
}

TEST_CASE("client: a chunked request body streams with backpressure") {
  test::LoopFixture f;
  constexpr std::size_t kTotal = 24u << 20;
  constexpr std::size_t kChunk = 64u << 10;
  std::size_t received = 0;
  bool pattern_ok = true;
  std::unique_ptr<Timer> slow;
  Upstream up(*f.loop, Endpoint::tcp("127.0.0.1", 0), [&](Upstream::Conn& c) {
    c.send(ok_response(std::to_string(received)));
  });
  up.on_body = [&](Upstream::Conn& c, std::string_view d) {
    if (received == 0) {
      // Stop reading for a while so the client's queue fills and write() says so.
      c.stream->read_stop();
      slow = f.loop->create_timer([&c] { c.stream->read_resume(); });
      slow->start(100ms);
    }
    for (char ch : d) {
      if (ch != static_cast<char>('a' + received % 26)) pattern_ok = false;
      ++received;
    }
  };
  auto client = HttpClient::create(*f.loop);
  RequestHead head = get("/upload");
  head.method = "POST";
  std::optional<Result<FetchResponse>> result;
  FetchResponse resp;
  ClientExchangePtr ex;
  ex = client->request(up.endpoint(), std::move(head), [&](Result<ResponseHead> r) {
    if (!r) {
      result.emplace(r.error());
      return;
    }
    resp.head = std::move(r).value();
    ex->read_body({[&](std::string_view d) { resp.body.append(d); },
                   [&](Status s) {
                     if (s) result.emplace(std::move(resp));
                     else result.emplace(s.error());
                   }});
  });
  std::string chunk(kChunk, 'x');
  std::size_t sent = 0;
  int refusals = 0, drains = 0;
  std::function<void()> pump = [&] {
    while (sent < kTotal) {
      for (std::size_t i = 0; i < kChunk; ++i) chunk[i] = static_cast<char>('a' + (sent + i) % 26);
      sent += kChunk;
      if (!ex->write(chunk)) {
        ++refusals;
        return;
      }
    }
    ex->end();
  };
  ex->set_drain_handler([&] {
    ++drains;
    pump();
  });
  pump();
  REQUIRE(test::run_until(*f.loop, [&] { return result.has_value(); }, 60s));
  REQUIRE(*result);
  CHECK((*result)->body == std::to_string(kTotal));
  CHECK(received == kTotal);
  CHECK(pattern_ok);
  CHECK(refusals > 0);
  CHECK(drains == refusals);
  CHECK(up.heads.at(0).headers.get("transfer-encoding") == "chunked");
  CHECK(client->idle_connection_count() == 1);  // a chunked body ends cleanly: reusable
  ex.reset();
  slow.reset();
  client.reset();
  up.shut();
  f.check_no_leaks();
}

TEST_CASE("client: a Content-Length request body written in pieces") {
  test::LoopFixture f;
  Upstream up(*f.loop, Endpoint::tcp("127.0.0.1", 0),
              [](Upstream::Conn& c) { c.send(ok_response("got:" + c.body)); });
  auto client = HttpClient::create(*f.loop);
  RequestHead head = get("/put");
  head.method = "PUT";
  head.headers.add("Content-Length", "11");
  Recorder rec;
  rec.start(*client, up.endpoint(), std::move(head));
  CHECK(rec.exchange->write("hello"));
  rec.exchange->end(" world");
  CHECK(test::run_until(*f.loop, [&] { return rec.end.has_value(); }));
  CHECK(rec.body == "got:hello world");
  CHECK(up.heads.at(0).headers.count("transfer-encoding") == 0);
  CHECK(client->idle_connection_count() == 1);
  rec.exchange.reset();
  client.reset();
  up.shut();
  f.check_no_leaks();
}

TEST_CASE("client: a 256 MiB response read with pause/resume keeps memory bounded") {
  test::LoopFixture f;
  constexpr std::size_t kTotal = 256u << 20;
  static char block[64 * 1024];
  for (std::size_t i = 0; i < sizeof(block); ++i) block[i] = static_cast<char>(i * 31);
  struct Pump {
    Upstream::Conn* c = nullptr;
    std::size_t left = 0;
    void run() {
      while (left > 0) {
        std::size_t n = std::min(left, sizeof(block));
        left -= n;
        if (!c->stream->write(std::string_view(block, n))) return;  // resumed by the drain
      }
    }
  } pump;
  Upstream up(*f.loop, Endpoint::tcp("127.0.0.1", 0), [&](Upstream::Conn& c) {
    c.send("HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(kTotal) + "\r\n\r\n");
    pump.c = &c;
    pump.left = kTotal;
    c.stream->set_drain_handler([&] { pump.run(); });
    pump.run();
  });
  auto client = HttpClient::create(*f.loop);
  const std::size_t baseline = test::current_rss_bytes();
  std::size_t got = 0, next_pause = 32u << 20, peak = baseline;
  bool paused = false, data_while_paused = false;
  int pauses = 0;
  std::optional<Status> end;
  std::unique_ptr<Timer> resume_timer;
  ClientExchangePtr ex;
  ex = client->request(up.endpoint(), get("/big"), [&](Result<ResponseHead> r) {
    REQUIRE(r);
    ex->read_body({[&](std::string_view d) {
                     if (paused) data_while_paused = true;
                     got += d.size();
                     if (got >= next_pause) {
                       next_pause += 32u << 20;
                       peak = std::max(peak, test::current_rss_bytes());
                       // A slow consumer: while paused the upstream must be held back.
                       paused = true;
                       ++pauses;
                       ex->pause_body();
                       resume_timer->start(20ms);
                     }
                   },
                   [&](Status s) { end.emplace(std::move(s)); }});
  });
  resume_timer = f.loop->create_timer([&] {
    peak = std::max(peak, test::current_rss_bytes());
    paused = false;
    ex->resume_body();
  });
  REQUIRE(test::run_until(*f.loop, [&] { return end.has_value(); }, 90s));
  CHECK(code_of(*end) == kNoError);
  CHECK(got == kTotal);
  CHECK(pauses >= 7);
  CHECK_FALSE(data_while_paused);
  MESSAGE("RSS growth during 256 MiB: " << (peak - baseline) / 1024 << " KiB");
#if !defined(__SANITIZE_ADDRESS__)  // ASan's quarantine keeps freed buffers resident
  CHECK(peak - baseline < (48u << 20));
#endif
  CHECK(client->idle_connection_count() == 1);
  ex.reset();
  resume_timer.reset();
  client.reset();
  up.shut();
  f.check_no_leaks();
}

TEST_CASE("client: connect timeout against a listener that never accepts") {
  test::LoopFixture f;
  // A listening socket with a one-slot backlog, filled and never accepted: further SYNs are
  // dropped, so a connect hangs until our timeout.
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
  ClientOptions opts;
  opts.connect_timeout = 200ms;
  auto client = HttpClient::create(*f.loop, opts);
  std::optional<Result<ResponseHead>> head;
  auto t0 = std::chrono::steady_clock::now();
  auto ex = client->request(Endpoint::tcp("127.0.0.1", ntohs(sa.sin_port)), get(),
                            [&](Result<ResponseHead> r) { head.emplace(std::move(r)); });
  CHECK(test::run_until(*f.loop, [&] { return head.has_value(); }));
  CHECK(code_of(*head) == Errc::Timeout);
  CHECK(std::chrono::steady_clock::now() - t0 >= 150ms);
  ex.reset();
  client.reset();
  for (int fd : fillers) ::close(fd);
  ::close(lfd);
  f.check_no_leaks();
}

TEST_CASE("client: nothing listening is an Io error") {
  test::LoopFixture f;
  // A port that was just free: bind, read it, close.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0);
  socklen_t len = sizeof(sa);
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) == 0);
  ::close(fd);
  auto client = HttpClient::create(*f.loop);
  auto r = fetch_now(*f.loop, *client, Endpoint::tcp("127.0.0.1", ntohs(sa.sin_port)));
  CHECK(code_of(r) == Errc::Io);
  client.reset();
  f.check_no_leaks();
}

TEST_CASE("client: read timeout while waiting for the head and in the middle of the body") {
  test::LoopFixture f;
  std::string reply;
  Upstream up(*f.loop, Endpoint::tcp("127.0.0.1", 0), [&](Upstream::Conn& c) { c.send(reply); });
  ClientOptions opts;
  opts.read_timeout = 150ms;
  auto client = HttpClient::create(*f.loop, opts);
  SUBCASE("no head") {
    auto t0 = std::chrono::steady_clock::now();
    auto r = fetch_now(*f.loop, *client, up.endpoint());
    CHECK(code_of(r) == Errc::Timeout);
    CHECK(std::chrono::steady_clock::now() - t0 >= 140ms);
  }
  SUBCASE("body stalls") {
    reply = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
    Recorder rec;
    rec.start(*client, up.endpoint());
    CHECK(test::run_until(*f.loop, [&] { return rec.end.has_value(); }));
    CHECK(rec.body == "abc");
    CHECK(code_of(*rec.end) == Errc::Timeout);
  }
  CHECK(client->idle_connection_count() == 0);
  CHECK(test::run_until(*f.loop, [&] { return up.eofs() == 1; }));
  client.reset();
  up.shut();
  f.check_no_leaks();
}

TEST_CASE("client: a body the consumer is not reading does not time out") {
  test::LoopFixture f;
  Upstream up(*f.loop, Endpoint::tcp("127.0.0.1", 0), [](Upstream::Conn& c) {
    c.send("HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n0123456789");
  });
  ClientOptions opts;
  opts.read_timeout = 100ms;
  auto client = HttpClient::create(*f.loop, opts);
  ClientExchangePtr ex;
  bool have_head = false;
  std::string body;
  std::optional<Status> end;
  ex = client->request(up.endpoint(), get(), [&](Result<ResponseHead> r) {
    REQUIRE(r);
    have_head = true;  // the body is not read yet
  });
  CHECK(test::run_until(*f.loop, [&] { return have_head; }));
  test::run_for(*f.loop, 250ms);  // a consumer slow to start: not the upstream's fault
  CHECK_FALSE(end.has_value());
  ex->read_body({[&](std::string_view d) {
                   body.append(d);
                   if (body.size() == 10) ex->pause_body();
                 },
                 [&](Status s) { end.emplace(std::move(s)); }});
  CHECK(body.empty());  // delivered later, never inside read_body()
  CHECK(test::run_until(*f.loop, [&] { return body.size() == 10; }));
  up.conns.at(0)->send("abcdefghij");
  test::run_for(*f.loop, 250ms);  // paused: neither data nor a timeout
  CHECK(body.size() == 10);
  CHECK_FALSE(end.has_value());
  ex->resume_body();
  CHECK(test::run_until(*f.loop, [&] { return body.size() == 20; }));
  up.conns.at(0)->send("ABCDEFGHIJ");
  CHECK(test::run_until(*f.loop, [&] { return end.has_value(); }));
  CHECK(code_of(*end) == kNoError);
  CHECK(body == "0123456789abcdefghijABCDEFGHIJ");
  CHECK(client->idle_connection_count() == 1);
  ex.reset();
  client.reset();
  up.shut();
  f.check_no_leaks();
}

TEST_CASE("client: a malformed response is UpstreamProtocol") {
  test::LoopFixture f;
  std::string reply;
  Upstream up(*f.loop, Endpoint::tcp("127.0.0.1", 0), [&](Upstream::Conn& c) { c.send(reply); });
  auto client = HttpClient::create(*f.loop);
  SUBCASE("garbage status line") { reply = "SSH-2.0-OpenSSH\r\n\r\n"; }
  SUBCASE("both Content-Length and Transfer-Encoding") {
    reply = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
            "3\r\nabc\r\n0\r\n\r\n";
  }
  SUBCASE("bad chunk size") {
    reply = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n";
  }
  SUBCASE("head larger than max_response_header_bytes") {
    reply = "HTTP/1.1 200 OK\r\nX-Big: " + std::string(70 * 1024, 'b') + "\r\n\r\n";
  }
  auto r = fetch_now(*f.loop, *client, up.endpoint());
  CHECK(code_of(r) == Errc::UpstreamProtocol);
  CHECK(client->idle_connection_count() == 0);
  client.reset();
  up.shut();
  f.check_no_leaks();
}

TEST_CASE("client: a head that cannot be sent safely is refused asynchronously") {
  test::LoopFixture f;
  auto client = HttpClient::create(*f.loop);
  RequestHead head = get();
  head.headers.add("X-Evil", "a\r\nInjected: yes");
  auto r = fetch_now(*f.loop, *client, Endpoint::tcp("127.0.0.1", 9), std::move(head));
  CHECK(code_of(r) == Errc::InvalidArgument);
  CHECK(client->connections_opened() == 0);
  client.reset();
  f.check_no_leaks();
}

TEST_CASE("client: dropping the exchange cancels it and closes the connection") {
  test::LoopFixture f;
  Upstream up(*f.loop, Endpoint::tcp("127.0.0.1", 0), [](Upstream::Conn&) {});  // silent
  auto client = HttpClient::create(*f.loop);
  std::optional<Result<ResponseHead>> head;
  auto ex = client->request(up.endpoint(), get(),
                            [&](Result<ResponseHead> r) { head.emplace(std::move(r)); });
  CHECK(test::run_until(*f.loop, [&] { return up.requests == 1; }));
  ex.reset();
  CHECK_FALSE(head.has_value());
  CHECK(test::run_until(*f.loop, [&] { return head.has_value(); }));
  CHECK(code_of(*head) == Errc::Cancelled);
  CHECK(test::run_until(*f.loop, [&] { return up.eofs() == 1; }));
  CHECK(client->idle_connection_count() == 0);
  client.reset();
  up.shut();
  f.check_no_leaks();
}

TEST_CASE("client: destroying the client cancels every exchange in flight") {
  test::LoopFixture f;
  Upstream up(*f.loop, Endpoint::tcp("127.0.0.1", 0), [](Upstream::Conn& c) {
    if (c.head.target == "/partial") c.send("HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nsome");
    // "/silent": no answer at all
  });
  auto client = HttpClient::create(*f.loop);
  Recorder silent, partial, connecting;
  std::optional<Result<FetchResponse>> fetched;
  silent.start(*client, up.endpoint(), get("/silent"));
  partial.start(*client, up.endpoint(), get("/partial"));
  CHECK(test::run_until(*f.loop, [&] { return up.requests == 2 && partial.body == "some"; }));
  connecting.start(*client, up.endpoint(), get("/connecting"));  // not even connected yet
  client->fetch(up.endpoint(), get("/fetch"), {},
                [&](Result<FetchResponse> r) { fetched.emplace(std::move(r)); });
  client.reset();
  CHECK_FALSE(silent.head.has_value());
  CHECK_FALSE(partial.end.has_value());
  CHECK(test::run_until(*f.loop, [&] {
    return silent.head && partial.end && connecting.head && fetched;
  }));
  CHECK(code_of(*silent.head) == Errc::Cancelled);
  CHECK(code_of(*partial.end) == Errc::Cancelled);
  CHECK(code_of(*connecting.head) == Errc::Cancelled);
  CHECK(code_of(*fetched) == Errc::Cancelled);
  // Calls on exchanges that outlived their client are harmless.
  CHECK(silent.exchange->write("x"));
  silent.exchange->end();
  silent.exchange->cancel();
  silent = {};
  partial = {};
  connecting = {};
  test::run_for(*f.loop, 20ms);  // the abandoned connect completes and is dropped
  up.shut();
  f.check_no_leaks();
}

TEST_CASE("client: the exchange or the client may be dropped from inside their own callbacks") {
  test::LoopFixture f;
  Upstream up(*f.loop, Endpoint::tcp("127.0.0.1", 0), [](Upstream::Conn& c) {
    c.send(chunked_response({"one", "two", "three"}) + chunked_response({"x"}));
  });
  auto client = HttpClient::create(*f.loop);
  SUBCASE("last exchange reference dropped in on_data") {
    ClientExchangePtr ex;
    int data_calls = 0;
    std::optional<Status> end;
    ex = client->request(up.endpoint(), get(), [&](Result<ResponseHead> r) {
      REQUIRE(r);
      ex->read_body({[&](std::string_view) {
                       ++data_calls;
                       ex.reset();  // the exchange is freed once this callback returns
                     },
                     [&](Status s) { end.emplace(std::move(s)); }});
    });
    CHECK(test::run_until(*f.loop, [&] { return end.has_value(); }));
    CHECK(data_calls == 1);
    CHECK(code_of(*end) == Errc::Cancelled);
  }
  SUBCASE("client destroyed in on_end, after its connection went back to the pool") {
    bool ended = false;
    Recorder rec;
    rec.exchange = client->request(up.endpoint(), get(), [&](Result<ResponseHead> r) {
      REQUIRE(r);
      rec.exchange->read_body({[](std::string_view) {}, [&](Status s) {
                                 CHECK(s);
                                 client.reset();
                                 ended = true;
                               }});
    });
    CHECK(test::run_until(*f.loop, [&] { return ended; }));
    rec.exchange.reset();
  }
  CHECK(test::run_until(*f.loop, [&] { return up.eofs() == 1; }));
  client.reset();
  up.shut();
  f.check_no_leaks();
}

TEST_CASE("client: fetch refuses bodies over max_body") {
  test::LoopFixture f;
  std::string reply;
  Upstream up(*f.loop, Endpoint::tcp("127.0.0.1", 0), [&](Upstream::Conn& c) { c.send(reply); });
  auto client = HttpClient::create(*f.loop);
  SUBCASE("announced by Content-Length") { reply = ok_response(std::string(5000, 'x')); }
  SUBCASE("found while reading a chunked body") {
    reply = chunked_response({std::string(600, 'x'), std::string(600, 'y')});
  }
  auto r = fetch_now(*f.loop, *client, up.endpoint(), get(), {}, 1000);
  CHECK(code_of(r) == Errc::LimitExceeded);
  auto ok = fetch_now(*f.loop, *client, up.endpoint(), get(), {}, 1 << 20);
  REQUIRE(ok);
  CHECK(ok->body.size() > 1000);
  CHECK(client->connections_opened() == 2);  // the cut-short one was not reused
  client.reset();
  up.shut();
  f.check_no_leaks();
}

TEST_CASE("client: fetch sends its body with Content-Length") {
  test::LoopFixture f;
  Upstream up(*f.loop, Endpoint::tcp("127.0.0.1", 0),
              [](Upstream::Conn& c) { c.send(ok_response(c.head.method + ":" + c.body)); });
  auto client = HttpClient::create(*f.loop);
  RequestHead head = get("/post");
  head.method = "POST";
  head.headers.add("Content-Type", "application/json");
  auto r = fetch_now(*f.loop, *client, up.endpoint(), std::move(head), R"({"a":1})");
  REQUIRE(r);
  CHECK(r->body == R"(POST:{"a":1})");
  CHECK(up.heads.at(0).headers.get("content-length") == "7");
  CHECK(up.heads.at(0).headers.count("transfer-encoding") == 0);
  client.reset();
  up.shut();
  f.check_no_leaks();
}

// ---------------------------------------------------------------------------------------------
// Batching (ClientOptions::max_batch): HTTP/1.1 pipelining of requests that start together.

namespace {
// One idle pooled connection to `up`, so that a batch can open on it.
void warm(Loop& loop, HttpClient& client, const Endpoint& where) {
  REQUIRE(fetch_now(loop, client, where, get("/warm")));
  REQUIRE(client.idle_connection_count() == 1);
}

ClientOptions batching(std::size_t max_batch) {
  ClientOptions o;
  o.max_batch = max_batch;
  return o;
}

void start_batched(Recorder& rec, HttpClient& client, const Endpoint& where, RequestHead h,
                   bool batchable = true) {
  rec.exchange = client.request(where, h, RequestOptions{batchable}, [&rec](Result<ResponseHead> r) {
    rec.head.emplace(std::move(r));
    if (*rec.head && rec.read_in_head_callback) rec.read();
  });
}

bool all_ended(const std::vector<Recorder>& recs) {
  return std::all_of(recs.begin(), recs.end(), [](const Recorder& r) { return r.end.has_value(); });
}

// Starts every recorder on `prefix` + its index, all in this iteration (one batch if they fit).
void start_all(std::vector<Recorder>& recs, HttpClient& client, const Endpoint& where,
               const std::string& prefix) {
  for (std::size_t i = 0; i < recs.size(); ++i) {
    start_batched(recs[i], client, where, get(prefix + std::to_string(i)));
  }
}

// Each recorder got its own answer ("answer to <its target>"), whole.
void check_answers(const std::vector<Recorder>& recs, const std::string& prefix) {
  for (std::size_t i = 0; i < recs.size(); ++i) {
    CAPTURE(i);
    REQUIRE(*recs[i].head);
    CHECK(code_of(*recs[i].end) == kNoError);
    CHECK(recs[i].body == "answer to " + prefix + std::to_string(i));
  }
}
}  // namespace

TEST_CASE("client: batchable requests started together share a connection and a write") {
  test::LoopFixture f;
  // Bodies of different sizes and framings: each answer must reach its own request.
  Upstream up(*f.loop, Endpoint::tcp("127.0.0.1", 0), [](Upstream::Conn& c) {
    if (c.requests % 2) c.send(ok_response("answer to " + c.head.target));
    else c.send(chunked_response({"answer ", "to ", c.head.target}));
  });
  auto client = HttpClient::create(*f.loop, batching(4));
  warm(*f.loop, *client, up.endpoint());
  std::vector<Recorder> recs(4);
  start_all(recs, *client, up.endpoint(), "/poll/");
  REQUIRE(test::run_until(*f.loop, [&] { return all_ended(recs); }));
  check_answers(recs, "/poll/");
  CHECK(client->connections_opened() == 1);
  CHECK(up.most_in_one_read == 4);  // one write, read at once by the server
  CHECK(client->idle_connection_count() == 1);

  SUBCASE("a full batch starts another, on another connection") {
    std::vector<Recorder> more(6);
    start_all(more, *client, up.endpoint(), "/more/");
    REQUIRE(test::run_until(*f.loop, [&] { return all_ended(more); }));
    check_answers(more, "/more/");
    // 4 on the pooled connection; the 5th found no idle one and connected (a new connection
    // is written at once, without a batch), and so did the 6th.
    CHECK(client->connections_opened() == 3);
  }
  SUBCASE("requests not marked batchable, or with a body, never join") {
    std::vector<Recorder> plain(2);
    start_batched(plain[0], *client, up.endpoint(), get("/a"));
    start_batched(plain[1], *client, up.endpoint(), get("/b"), false);
    RequestHead post = get("/c");
    post.method = "POST";
    std::optional<Result<FetchResponse>> posted;
    client->fetch(up.endpoint(), post, "body", [&](Result<FetchResponse> r) { posted.emplace(std::move(r)); });
    REQUIRE(test::run_until(*f.loop, [&] { return all_ended(plain) && posted; }));
    CHECK(plain[1].body == "answer to /b");
    CHECK(client->connections_opened() == 3);
  }
  client.reset();
  up.shut();
  f.check_no_leaks();
}

TEST_CASE("client: a batched request dropped or cancelled before its answer does not disturb the others") {
  test::LoopFixture f;
  Upstream up(*f.loop, Endpoint::tcp("127.0.0.1", 0), [](Upstream::Conn& c) {
    if (c.head.method == "HEAD") c.send("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
    else c.send(ok_response("answer to " + c.head.target));
  });
  auto client = HttpClient::create(*f.loop, batching(8));
  warm(*f.loop, *client, up.endpoint());
  std::vector<Recorder> recs(5);
  for (std::size_t i = 0; i < recs.size(); ++i) {
    RequestHead h = get("/r/" + std::to_string(i));
    if (i == 1 || i == 3) h.method = "HEAD";  // answers without a body, for the parser to skip
    start_batched(recs[i], *client, up.endpoint(), std::move(h));
  }
  recs[1].exchange.reset();     // dropped: its answer is read and dropped
  recs[3].exchange->cancel();   // cancelled: the same
  REQUIRE(test::run_until(*f.loop, [&] {
    return recs[0].end && recs[2].end && recs[4].end && recs[1].head && recs[3].head;
  }));
  CHECK(code_of(*recs[1].head) == Errc::Cancelled);
  CHECK(code_of(*recs[3].head) == Errc::Cancelled);
  for (std::size_t i : {0, 2, 4}) {
    CAPTURE(i);
    CHECK(code_of(*recs[i].end) == kNoError);
    CHECK(recs[i].body == "answer to /r/" + std::to_string(i));
  }
  CHECK(up.requests == 6);  // the warm-up and all five: they had gone out together
  REQUIRE(test::run_until(*f.loop, [&] { return client->idle_connection_count() == 1; }));
  CHECK(client->connections_opened() == 1);  // the connection survived and went back

  SUBCASE("the last of a batch dropped: the connection still returns to the pool") {
    std::vector<Recorder> two(2);
    start_batched(two[0], *client, up.endpoint(), get("/x"));
    start_batched(two[1], *client, up.endpoint(), get("/y"));
    two[1] = {};
    REQUIRE(test::run_until(*f.loop, [&] { return two[0].end && up.requests == 8; }));
    REQUIRE(test::run_until(*f.loop, [&] { return client->idle_connection_count() == 1; }));
    CHECK(client->connections_opened() == 1);
  }
  client.reset();
  up.shut();
  f.check_no_leaks();
}

TEST_CASE("client: a batch's requests are sent once more when its connection fails") {
  test::LoopFixture f;
  int closes = 0;
  int close_after = 1;
  Upstream up(*f.loop, Endpoint::tcp("127.0.0.1", 0), [&](Upstream::Conn& c) {
    if (c.head.target == "/warm") return c.send(ok_response("warm"));
    c.send(ok_response("answer to " + c.head.target));
    // The connection that carried the batch answers `close_after` requests, then closes.
    if (c.requests == close_after + 1 && closes == 0) {
      ++closes;
      c.close();
    }
  });
  auto client = HttpClient::create(*f.loop, batching(8));
  warm(*f.loop, *client, up.endpoint());
  std::vector<Recorder> recs(4);
  SUBCASE("after the first answer") { close_after = 1; }
  SUBCASE("after the third") { close_after = 3; }
  start_all(recs, *client, up.endpoint(), "/r/");
  REQUIRE(test::run_until(*f.loop, [&] { return all_ended(recs); }));
  check_answers(recs, "/r/");
  CHECK(closes == 1);
  // The unanswered ones each went again on a connection of their own.
  const int resent = static_cast<int>(recs.size()) - close_after;
  CHECK(client->connections_opened() == static_cast<std::uint64_t>(1 + resent));
  // Each was answered once: the server read no further than the request it closed after.
  CHECK(up.requests == 1 + static_cast<int>(recs.size()));
  client.reset();
  up.shut();
  f.check_no_leaks();
}

TEST_CASE("client: a batched request sent again fails if its second connection fails too") {
  test::LoopFixture f;
  Upstream up(*f.loop, Endpoint::tcp("127.0.0.1", 0), [&](Upstream::Conn& c) {
    if (c.head.target == "/warm" || c.head.target == "/first") return c.send(ok_response("ok"));
    c.close();  // never answers anything else
  });
  auto client = HttpClient::create(*f.loop, batching(8));
  warm(*f.loop, *client, up.endpoint());
  std::vector<Recorder> recs(2);
  start_batched(recs[0], *client, up.endpoint(), get("/first"));
  start_batched(recs[1], *client, up.endpoint(), get("/second"));
  REQUIRE(test::run_until(*f.loop, [&] { return recs[0].end && recs[1].head; }));
  CHECK(code_of(*recs[0].end) == kNoError);
  CHECK(code_of(*recs[1].head) == Errc::Io);
  CHECK(up.requests == 4);  // warm, first, second, and second once more
  client.reset();
  up.shut();
  f.check_no_leaks();
}

TEST_CASE("client: a batch whose first request is cancelled before the write still sends the rest") {
  test::LoopFixture f;
  Upstream up(*f.loop, Endpoint::tcp("127.0.0.1", 0),
              [](Upstream::Conn& c) { c.send(ok_response("answer to " + c.head.target)); });
  auto client = HttpClient::create(*f.loop, batching(8));
  warm(*f.loop, *client, up.endpoint());
  std::vector<Recorder> recs(3);
  start_all(recs, *client, up.endpoint(), "/r/");
  recs[0].exchange->cancel();  // it opened the batch; nothing has been written yet
  REQUIRE(test::run_until(*f.loop, [&] { return recs[0].head && recs[1].end && recs[2].end; }));
  CHECK(code_of(*recs[0].head) == Errc::Cancelled);
  CHECK(recs[1].body == "answer to /r/1");
  CHECK(recs[2].body == "answer to /r/2");
  for (const auto& h : up.heads) CHECK(h.target != "/r/0");  // never sent
  CHECK(up.requests == 3);
  client.reset();
  up.shut();
  f.check_no_leaks();
}

TEST_CASE("client: the first of a batch cancelled after the write keeps the connection for the rest") {
  test::LoopFixture f;
  Upstream::Conn* held = nullptr;
  std::vector<std::string> targets;
  Upstream up(*f.loop, Endpoint::tcp("127.0.0.1", 0), [&](Upstream::Conn& c) {
    if (c.head.target == "/warm") return c.send(ok_response("warm"));
    held = &c;  // answered later, in order, by the test
    targets.push_back(c.head.target);
  });
  auto client = HttpClient::create(*f.loop, batching(8));
  warm(*f.loop, *client, up.endpoint());
  std::vector<Recorder> recs(3);
  start_all(recs, *client, up.endpoint(), "/r/");
  REQUIRE(test::run_until(*f.loop, [&] { return targets.size() == 3; }));
  SUBCASE("before its answer") {
    recs[0].exchange->cancel();  // as the proxy does when its client goes away
    for (const auto& t : targets) held->send(ok_response("answer to " + t));
  }
  SUBCASE("in the middle of its answer") {
    held->send("HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\npart");
    REQUIRE(test::run_until(*f.loop, [&] { return recs[0].body == "part"; }));
    recs[0].exchange->cancel();
    held->send(std::string(16, 'x'));
    for (std::size_t i = 1; i < targets.size(); ++i) held->send(ok_response("answer to " + targets[i]));
  }
  REQUIRE(test::run_until(*f.loop, [&] { return recs[1].end && recs[2].end; }));
  CHECK(recs[1].body == "answer to /r/1");
  CHECK(recs[2].body == "answer to /r/2");
  CHECK(client->connections_opened() == 1);  // nothing sent again
  CHECK(up.requests == 4);
  REQUIRE(test::run_until(*f.loop, [&] { return client->idle_connection_count() == 1; }));
  client.reset();
  up.shut();
  f.check_no_leaks();
}

TEST_CASE("client: destroying the client with batched requests waiting cancels them all") {
  test::LoopFixture f;
  Upstream up(*f.loop, Endpoint::tcp("127.0.0.1", 0), [&](Upstream::Conn& c) {
    if (c.head.target == "/warm") c.send(ok_response("warm"));  // the rest: silence
  });
  auto client = HttpClient::create(*f.loop, batching(8));
  warm(*f.loop, *client, up.endpoint());
  std::vector<Recorder> recs(3);
  for (auto& r : recs) start_batched(r, *client, up.endpoint(), get("/silent"));
  REQUIRE(test::run_until(*f.loop, [&] { return up.requests == 4; }));
  client.reset();
  REQUIRE(test::run_until(*f.loop, [&] {
    return std::all_of(recs.begin(), recs.end(), [](const Recorder& r) { return r.head.has_value(); });
  }));
  for (auto& r : recs) CHECK(code_of(*r.head) == Errc::Cancelled);
  recs.clear();
  up.shut();
  f.check_no_leaks();
}

}  // TEST_SUITE
