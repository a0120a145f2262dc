// CurlMulti against servers on loopback and unix sockets: a tiny raw HTTP responder on the
// test's own loop (Listener + Stream), a never-accepting POSIX socket, and `openssl s_server`
// for HTTPS.

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "curl/curl_error.hpp"
#include "curl/multi.hpp"
#include "support/loop_runner.hpp"
#include "terminals/loop.hpp"
#include "uv/uv_stream.hpp"

extern char** environ;

using namespace terminals;
using namespace std::chrono_literals;
using terminals::detail::CurlMulti;
using terminals::detail::CurlRequest;
using terminals::detail::CurlResponse;
using terminals::detail::CurlStreamHandlers;
using terminals::detail::TransferHandle;

namespace {

// ---------------------------------------------------------------------------------------------
// A raw HTTP/1.1 responder: reads requests (head up to "\r\n\r\n" plus a Content-Length body),
// one after another per connection (curl reuses connections), and asks the test what to do.

struct Request {
  std::string method, target, head, body;

  std::optional<std::string> header(std::string_view name) const {
    std::istringstream in(head);
    std::string line;
    std::getline(in, line);  // request line
    while (std::getline(in, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      auto colon = line.find(':');
      if (colon == std::string::npos) continue;
      if (!iequals(std::string_view(line).substr(0, colon), name)) continue;
      std::string v = line.substr(colon + 1);
      while (!v.empty() && v.front() == ' ') v.erase(0, 1);
      return v;
    }
    return std::nullopt;
  }
};

std::string response(int status, const std::string& body, const std::string& extra_headers = "") {
  return "HTTP/1.1 " + std::to_string(status) + " " + status_reason(status) +
         "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" + extra_headers + "\r\n" +
         body;
}

class RawServer {
 public:
  struct Conn {
    StreamPtr stream;
    std::string buffer;
  };
  /// Returns the bytes to answer, or nullopt to answer later (through `conn`) or never.
  using Handler = std::function<std::optional<std::string>(Conn& conn, const Request& req)>;

  RawServer(Loop& loop, const Endpoint& ep, Handler handler) : loop_(loop), handler_(std::move(handler)) {
    auto l = detail::Listener::create(loop, ep, {}, [this](Result<StreamPtr> s) {
      if (!s) return;
      auto conn = std::make_unique<Conn>();
      conn->stream = std::move(s).value();
      Conn* c = conn.get();
      conns_.push_back(std::move(conn));
      ++accepted;
      c->stream->read_start([this, c](Result<std::string_view> data) {
        if (!data) return;  // EOF or error: the connection stays until the server goes
        c->buffer.append(*data);
        parse(*c);
      });
    });
    REQUIRE(l.has_value());
    listener_ = std::move(l).value();
  }

  Endpoint endpoint() const { return listener_->local_endpoint(); }
  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(endpoint().port); }
  /// Stops accepting; connections stay open.
  void stop_listening() { listener_->close(); }

  int accepted = 0;
  std::vector<Request> requests;

 private:
  void parse(Conn& c) {
    for (;;) {
      auto end = c.buffer.find("\r\n\r\n");
      if (end == std::string::npos) return;
      Request r;
      r.head = c.buffer.substr(0, end + 2);
      std::size_t length = 0;
      std::istringstream first(r.head);
      first >> r.method >> r.target;
      if (auto cl = r.header("Content-Length")) length = std::stoul(*cl);
      if (c.buffer.size() < end + 4 + length) return;
      r.body = c.buffer.substr(end + 4, length);
      c.buffer.erase(0, end + 4 + length);
      requests.push_back(r);
      if (auto answer = handler_(c, r)) c.stream->write(*answer);
    }
  }

  Loop& loop_;
  Handler handler_;
  std::unique_ptr<detail::Listener> listener_;
  std::vector<std::unique_ptr<Conn>> conns_;
};

RawServer::Handler answer_with(std::string bytes) {
  return [bytes](RawServer::Conn&, const Request&) -> std::optional<std::string> { return bytes; };
}

RawServer::Handler never_answer() {
  return [](RawServer::Conn&, const Request&) -> std::optional<std::string> { return std::nullopt; };
}

std::unique_ptr<CurlMulti> make_multi(Loop& loop) {
  auto m = CurlMulti::create(loop);
  REQUIRE(m.has_value());
  return std::move(m).value();
}

CurlRequest get(std::string url) {
  CurlRequest r;
  r.url = std::move(url);
  return r;
}

// Collects one transfer's outcome and counts how often `done` ran.
struct Outcome {
  int calls = 0;
  std::optional<Result<CurlResponse>> result;

  Callback<CurlResponse> callback() {
    return [this](Result<CurlResponse> r) {
      ++calls;
      result.emplace(std::move(r));
    };
  }
  bool ok() const { return result && result->has_value(); }
  const CurlResponse& response() const { return result->value(); }
  Errc code() const { return result->error().code; }
};

// A TCP port on 127.0.0.1 that nothing listens on (bound, read back, closed).
int closed_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
  socklen_t len = sizeof(a);
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  ::close(fd);
  return ntohs(a.sin_port);
}

// ---------------------------------------------------------------------------------------------
// HTTPS: a throwaway self-signed certificate and `openssl s_server -www` as a child process.

bool have_openssl() { return std::system("command -v openssl >/dev/null 2>&1") == 0; }

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// A self-signed certificate for 127.0.0.1 (it is its own CA) and its key, in `dir`.
bool make_cert(const test::TempDir& dir, const std::string& name) {
  std::string cmd = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
                    " -days 2 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1"
                    " -keyout " + dir.file(name + "-key.pem") + " -out " + dir.file(name + ".pem") +
                    " >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

class OpensslServer {
 public:
  /// Starts `openssl s_server -www` on a free 127.0.0.1 port; `extra` are more arguments.
  bool start(const std::string& cert, const std::string& key, std::vector<std::string> extra = {}) {
    for (int attempt = 0; attempt < 5; ++attempt) {
      port_ = closed_port();  // free a moment ago; s_server exits if someone took it since
      std::vector<std::string> args = {"openssl", "s_server", "-accept",
                                       "127.0.0.1:" + std::to_string(port_), "-cert", cert,
                                       "-key", key, "-www"};
      args.insert(args.end(), extra.begin(), extra.end());
      if (spawn(args) && wait_for_accept()) return true;
      stop();
    }
    return false;
  }
  int port() const { return port_; }
  ~OpensslServer() { stop(); }

 private:
  bool spawn(const std::vector<std::string>& args) {
    int fds[2];
    if (::pipe(fds) != 0) return false;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    int rc = posix_spawnp(&pid_, "openssl", &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    ::close(fds[1]);
    out_ = fds[0];
    if (rc != 0) pid_ = -1;
    return rc == 0;
  }

  // s_server prints "ACCEPT" once it listens; EOF means it gave up (port taken).
  bool wait_for_accept() {
    std::string seen;
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{out_, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      char buf[512];
      ssize_t n = ::read(out_, buf, sizeof(buf));
      if (n <= 0) return false;
      seen.append(buf, static_cast<std::size_t>(n));
      if (seen.find("ACCEPT") != std::string::npos) return true;
    }
    return false;
  }

  void stop() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
    if (out_ >= 0) ::close(out_);
    out_ = -1;
  }

  pid_t pid_ = -1;
  int out_ = -1;
  int port_ = 0;
};

}  // namespace

TEST_SUITE("integration") {

TEST_CASE("curl: GET over a unix socket (Docker style)") {
  test::LoopFixture f;
  test::TempDir dir;
  RawServer server(*f.loop, Endpoint::unix_socket(dir.file("d.sock")),
                   answer_with(response(200, "{\"ok\":true}", "Content-Type: application/json\r\nX-Test: yes\r\n")));
  auto multi = make_multi(*f.loop);
  CurlRequest req = get("http://localhost/v1.43/info");
  req.unix_socket_path = dir.file("d.sock");
  Outcome out;
  auto h = multi->perform(std::move(req), out.callback());
  CHECK(h.active());
  CHECK(test::run_until(*f.loop, [&] { return out.calls == 1; }));
  REQUIRE(out.ok());
  CHECK(out.response().status == 200);
  CHECK(out.response().body == "{\"ok\":true}");
  CHECK(out.response().headers.get("x-test").value_or("") == "yes");
  CHECK(out.response().headers.get("Content-Type").value_or("") == "application/json");
  REQUIRE(server.requests.size() == 1);
  CHECK(server.requests[0].method == "GET");
  CHECK(server.requests[0].target == "/v1.43/info");
  CHECK(server.requests[0].header("Host").value_or("") == "localhost");
  CHECK_FALSE(h.active());
  CHECK(multi->active_transfers() == 0);
  multi.reset();
  test::run_for(*f.loop, 10ms);
  CHECK(out.calls == 1);
}

TEST_CASE("curl: GET over TCP 127.0.0.1 / error statuses are responses / connections are reused") {
  test::LoopFixture f;
  RawServer server(*f.loop, Endpoint::tcp("127.0.0.1", 0),
                   [](RawServer::Conn&, const Request& r) -> std::optional<std::string> {
                     if (r.target == "/missing") return response(404, "{\"message\":\"no such thing\"}");
                     return response(200, "hello");
                   });
  auto multi = make_multi(*f.loop);
  Outcome a, b;
  auto h1 = multi->perform(get(server.base_url() + "/hello"), a.callback());
  CHECK(test::run_until(*f.loop, [&] { return a.calls == 1; }));
  auto h2 = multi->perform(get(server.base_url() + "/missing"), b.callback());
  CHECK(test::run_until(*f.loop, [&] { return b.calls == 1; }));
  REQUIRE(a.ok());
  CHECK(a.response().status == 200);
  CHECK(a.response().body == "hello");
  REQUIRE(b.ok());
  CHECK(b.response().status == 404);
  CHECK(detail::errc_for_http_status(b.response().status) == Errc::NotFound);
  CHECK(server.accepted == 1);  // keep-alive: the second request reused the connection
}

TEST_CASE("curl: POST / PUT and DELETE send body and headers as given") {
  test::LoopFixture f;
  RawServer server(*f.loop, Endpoint::tcp("127.0.0.1", 0), answer_with(response(201, "created")));
  auto multi = make_multi(*f.loop);
  std::string big(200 * 1024, 'x');  // above curl's Expect: 100-continue threshold

  CurlRequest post = get(server.base_url() + "/containers/create?name=t1");
  post.method = "POST";
  post.body = "{\"Image\":\"alpine\"}";
  post.headers.add("Content-Type", "application/json");
  post.headers.add("X-Registry-Auth", "abc");
  post.headers.add("X-Empty", "");
  post.bearer_token = "tok123";
  CurlRequest put = get(server.base_url() + "/put");
  put.method = "PUT";
  CurlRequest del = get(server.base_url() + "/del");
  del.method = "DELETE";
  CurlRequest large = get(server.base_url() + "/large");
  large.method = "POST";
  large.body = big;

  Outcome o1, o2, o3, o4;
  auto h1 = multi->perform(std::move(post), o1.callback());
  auto h2 = multi->perform(std::move(put), o2.callback());
  auto h3 = multi->perform(std::move(del), o3.callback());
  auto h4 = multi->perform(std::move(large), o4.callback());
  CHECK(test::run_until(*f.loop, [&] { return o1.calls + o2.calls + o3.calls + o4.calls == 4; }));
  for (auto* o : {&o1, &o2, &o3, &o4}) {
    REQUIRE(o->ok());
    CHECK(o->response().status == 201);
    CHECK(o->response().body == "created");
  }
  REQUIRE(server.requests.size() == 4);
  for (const auto& r : server.requests) {
    CAPTURE(r.head);
    CHECK_FALSE(r.header("Expect"));
    if (r.target == "/containers/create?name=t1") {
      CHECK(r.method == "POST");
      CHECK(r.body == "{\"Image\":\"alpine\"}");
      CHECK(r.header("Content-Type").value_or("") == "application/json");
      CHECK(r.header("X-Registry-Auth").value_or("") == "abc");
      CHECK(r.header("X-Empty").value_or("?") == "");
      CHECK(r.header("Authorization").value_or("") == "Bearer tok123");
    } else if (r.target == "/put") {
      CHECK(r.method == "PUT");
      CHECK(r.header("Content-Length").value_or("") == "0");
    } else if (r.target == "/del") {
      CHECK(r.method == "DELETE");
      CHECK_FALSE(r.header("Content-Length"));
    } else {
      CHECK(r.target == "/large");
      CHECK(r.body == big);
      CHECK_FALSE(r.header("Content-Type"));  // no invented form encoding
    }
  }
}

TEST_CASE("curl: 50 concurrent transfers all complete") {
  test::LoopFixture f;
  test::TempDir dir;
  RawServer tcp(*f.loop, Endpoint::tcp("127.0.0.1", 0),
                [](RawServer::Conn&, const Request& r) -> std::optional<std::string> {
                  return response(200, "tcp" + r.target);
                });
  RawServer unix_server(*f.loop, Endpoint::unix_socket(dir.file("u.sock")),
                        [](RawServer::Conn&, const Request& r) -> std::optional<std::string> {
                          return response(200, "unix" + r.target);
                        });
  auto multi = make_multi(*f.loop);
  constexpr int kCount = 50;
  std::vector<Outcome> outs(kCount);
  std::vector<TransferHandle> handles;
  for (int i = 0; i < kCount; ++i) {
    CurlRequest r;
    if (i % 2 == 0) {
      r.url = tcp.base_url() + "/n/" + std::to_string(i);
    } else {
      r.url = "http://localhost/n/" + std::to_string(i);
      r.unix_socket_path = dir.file("u.sock");
    }
    handles.push_back(multi->perform(std::move(r), outs[i].callback()));
  }
  CHECK(multi->active_transfers() == kCount);
  CHECK(test::run_until(*f.loop, [&] {
    for (auto& o : outs) {
      if (o.calls == 0) return false;
    }
    return true;
  }));
  for (int i = 0; i < kCount; ++i) {
    CAPTURE(i);
    CHECK(outs[i].calls == 1);
    REQUIRE(outs[i].ok());
    CHECK(outs[i].response().body == std::string(i % 2 == 0 ? "tcp" : "unix") + "/n/" + std::to_string(i));
  }
  CHECK(multi->active_transfers() == 0);
}

TEST_CASE("curl: a server that never answers gives Timeout") {
  test::LoopFixture f;
  RawServer server(*f.loop, Endpoint::tcp("127.0.0.1", 0), never_answer());
  auto multi = make_multi(*f.loop);
  CurlRequest r = get(server.base_url() + "/slow");
  r.timeout = 200ms;
  Outcome out;
  auto t0 = std::chrono::steady_clock::now();
  auto h = multi->perform(std::move(r), out.callback());
  CHECK(test::run_until(*f.loop, [&] { return out.calls == 1; }));
  auto elapsed = std::chrono::steady_clock::now() - t0;
  CHECK(elapsed >= 190ms);
  CHECK(elapsed < 3s);
  REQUIRE(out.result);
  REQUIRE_FALSE(out.ok());
  CHECK(out.code() == Errc::Timeout);
  CHECK(out.result->error().source == ErrorSource::Curl);
  CHECK(out.result->error().native == 28);  // CURLE_OPERATION_TIMEDOUT
  CHECK(out.result->error().message.find("/slow") != std::string::npos);
  MESSAGE(out.result->error().to_string());
}

TEST_CASE("curl: connection refused and a missing unix socket give BackendUnavailable") {
  test::LoopFixture f;
  test::TempDir dir;
  auto multi = make_multi(*f.loop);
  Outcome refused, missing;
  auto h1 = multi->perform(get("http://127.0.0.1:" + std::to_string(closed_port()) + "/"), refused.callback());
  CurlRequest r = get("http://localhost/_ping");
  r.unix_socket_path = dir.file("nobody-home.sock");
  auto h2 = multi->perform(std::move(r), missing.callback());
  CHECK(test::run_until(*f.loop, [&] { return refused.calls == 1 && missing.calls == 1; }));
  REQUIRE(refused.result);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.code() == Errc::BackendUnavailable);
  CHECK(refused.result->error().native == 7);  // CURLE_COULDNT_CONNECT
  MESSAGE(refused.result->error().to_string());
  REQUIRE(missing.result);
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.code() == Errc::BackendUnavailable);
  CHECK(missing.result->error().message.find("nobody-home.sock") != std::string::npos);
  MESSAGE(missing.result->error().to_string());
  multi.reset();
  f.check_no_leaks();
}

TEST_CASE("curl: a response above max_response_bytes gives LimitExceeded") {
  test::LoopFixture f;
  const std::string body(10000, 'b');
  std::string chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 10; ++i) chunked += "3e8\r\n" + std::string(1000, 'c') + "\r\n";
  chunked += "0\r\n\r\n";
  RawServer server(*f.loop, Endpoint::tcp("127.0.0.1", 0),
                   [&](RawServer::Conn&, const Request& r) -> std::optional<std::string> {
                     return r.target == "/chunked" ? chunked : response(200, body);
                   });
  auto multi = make_multi(*f.loop);
  Outcome with_length, without_length, fits;
  CurlRequest a = get(server.base_url() + "/length");
  a.max_response_bytes = 4096;
  CurlRequest b = get(server.base_url() + "/chunked");
  b.max_response_bytes = 4096;
  CurlRequest c = get(server.base_url() + "/length");
  c.max_response_bytes = body.size();  // exactly at the limit is fine
  auto h1 = multi->perform(std::move(a), with_length.callback());
  auto h2 = multi->perform(std::move(b), without_length.callback());
  auto h3 = multi->perform(std::move(c), fits.callback());
  CHECK(test::run_until(*f.loop, [&] { return with_length.calls + without_length.calls + fits.calls == 3; }));
  REQUIRE(with_length.result);
  REQUIRE_FALSE(with_length.ok());
  CHECK(with_length.code() == Errc::LimitExceeded);
  REQUIRE(without_length.result);
  REQUIRE_FALSE(without_length.ok());
  CHECK(without_length.code() == Errc::LimitExceeded);
  CHECK(without_length.result->error().message.find("4096") != std::string::npos);
  REQUIRE(fits.ok());
  CHECK(fits.response().body == body);
}

TEST_CASE("curl: a chunked stream arrives in pieces and honours pause/resume") {
  test::LoopFixture f;
  constexpr int kChunks = 12;
  auto chunk_text = [](int i) { return "event-" + std::to_string(i) + "\n"; };
  std::string expected;
  for (int i = 0; i < kChunks; ++i) expected += chunk_text(i);

  // The server sends one chunk every 5 ms from a repeating timer, then the last chunk.
  std::unique_ptr<Timer> feeder;
  int sent = 0;
  RawServer server(*f.loop, Endpoint::tcp("127.0.0.1", 0),
                   [&](RawServer::Conn& c, const Request&) -> std::optional<std::string> {
                     c.stream->write("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n");
                     Stream* s = c.stream.get();
                     feeder = f.loop->create_timer([&, s] {
                       if (sent == kChunks) {
                         s->write("0\r\n\r\n");
                         feeder->stop();
                         return;
                       }
                       std::string t = chunk_text(sent++);
                       char size[16];
                       std::snprintf(size, sizeof(size), "%zx\r\n", t.size());
                       s->write(size + t + "\r\n");
                     });
                     feeder->start(5ms, 5ms);
                     return std::nullopt;
                   });
  auto multi = make_multi(*f.loop);
  TransferHandle h;
  std::string got;
  int data_calls = 0, head_calls = 0, data_while_paused = 0;
  bool paused = false;
  long head_status = 0;
  std::unique_ptr<Timer> resumer = f.loop->create_timer([&] {
    paused = false;
    h.resume();
    CHECK(data_calls == 1);  // resume() does not deliver inside the call
  });
  Outcome out;
  CurlStreamHandlers handlers;
  handlers.on_head = [&](const CurlResponse& head) {
    ++head_calls;
    head_status = head.status;
    CHECK(head.headers.get("Content-Type").value_or("") == "text/plain");
  };
  handlers.on_data = [&](std::string_view chunk) {
    if (paused) ++data_while_paused;
    ++data_calls;
    got.append(chunk);
    if (data_calls == 1) {
      // Pause from inside on_data for long enough that several chunks pile up.
      paused = true;
      h.pause();
      resumer->start(60ms);
    }
  };
  handlers.done = out.callback();
  CurlRequest r = get(server.base_url() + "/events");
  r.timeout = 0ms;  // a stream: no overall limit
  h = multi->stream(std::move(r), std::move(handlers));
  CHECK(test::run_until(*f.loop, [&] { return out.calls == 1; }));
  REQUIRE(out.ok());
  CHECK(out.response().status == 200);
  CHECK(out.response().body.empty());
  CHECK(head_calls == 1);
  CHECK(head_status == 200);
  CHECK(got == expected);
  CHECK(data_calls > 2);
  CHECK(data_while_paused == 0);
  CHECK(sent == kChunks);
}

TEST_CASE("curl: pause from outside a callback holds data back until resume") {
  test::LoopFixture f;
  RawServer::Conn* conn = nullptr;
  RawServer server(*f.loop, Endpoint::tcp("127.0.0.1", 0),
                   [&](RawServer::Conn& c, const Request&) -> std::optional<std::string> {
                     conn = &c;
                     return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n";
                   });
  auto multi = make_multi(*f.loop);
  std::string got;
  Outcome out;
  CurlStreamHandlers handlers;
  handlers.on_data = [&](std::string_view chunk) { got.append(chunk); };
  handlers.done = out.callback();
  auto h = multi->stream(get(server.base_url() + "/logs"), std::move(handlers));
  CHECK(test::run_until(*f.loop, [&] { return got == "first"; }));
  h.pause();
  conn->stream->write("6\r\nsecond\r\n0\r\n\r\n");
  test::run_for(*f.loop, 50ms);
  CHECK(got == "first");  // held back
  CHECK(out.calls == 0);
  h.resume();
  CHECK(got == "first");  // not inside resume()
  CHECK(test::run_until(*f.loop, [&] { return out.calls == 1; }));
  CHECK(got == "firstsecond");
  CHECK(out.ok());
}

TEST_CASE("curl: cancel mid-transfer reports Cancelled once and leaks nothing") {
  test::LoopFixture f;
  auto server = std::make_unique<RawServer>(*f.loop, Endpoint::tcp("127.0.0.1", 0), never_answer());
  auto multi = make_multi(*f.loop);
  Outcome by_cancel, by_drop, by_reassign;
  auto h1 = multi->perform(get(server->base_url() + "/a"), by_cancel.callback());
  std::optional<TransferHandle> h2 = multi->perform(get(server->base_url() + "/b"), by_drop.callback());
  auto h3 = multi->perform(get(server->base_url() + "/c"), by_reassign.callback());
  CHECK(test::run_until(*f.loop, [&] { return server->requests.size() == 3; }));
  h1.cancel();
  h2.reset();   // destroying the handle cancels
  h3 = TransferHandle();  // so does overwriting it
  CHECK(by_cancel.calls == 0);  // never inside cancel()
  CHECK(by_drop.calls == 0);
  CHECK(by_reassign.calls == 0);
  CHECK_FALSE(h1.active());
  CHECK(multi->active_transfers() == 0);
  h1.cancel();  // idempotent
  test::run_for(*f.loop, 50ms);
  for (auto* o : {&by_cancel, &by_drop, &by_reassign}) {
    CHECK(o->calls == 1);
    REQUIRE(o->result);
    REQUIRE_FALSE(o->ok());
    CHECK(o->code() == Errc::Cancelled);
  }
  multi.reset();
  server.reset();
  f.check_no_leaks();
}

TEST_CASE("curl: cancel from inside on_data stops the stream") {
  test::LoopFixture f;
  RawServer server(*f.loop, Endpoint::tcp("127.0.0.1", 0),
                   answer_with("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\none\r\n"));
  auto multi = make_multi(*f.loop);
  TransferHandle h;
  int data_calls = 0;
  Outcome out;
  CurlStreamHandlers handlers;
  handlers.on_data = [&](std::string_view) {
    ++data_calls;
    h.cancel();
    CHECK(out.calls == 0);
  };
  handlers.done = out.callback();
  h = multi->stream(get(server.base_url() + "/watch"), std::move(handlers));
  CHECK(test::run_until(*f.loop, [&] { return out.calls == 1; }));
  test::run_for(*f.loop, 30ms);
  CHECK(data_calls == 1);
  CHECK(out.calls == 1);
  CHECK(out.code() == Errc::Cancelled);
  CHECK(multi->active_transfers() == 0);
}

TEST_CASE("curl: destroying the CurlMulti with transfers in flight cancels each once") {
  test::LoopFixture f;
  auto server = std::make_unique<RawServer>(*f.loop, Endpoint::tcp("127.0.0.1", 0), never_answer());
  auto multi = make_multi(*f.loop);
  constexpr int kCount = 5;
  std::vector<Outcome> outs(kCount);
  std::vector<TransferHandle> handles;
  for (int i = 0; i < kCount; ++i) {
    handles.push_back(multi->perform(get(server->base_url() + "/" + std::to_string(i)), outs[i].callback()));
  }
  Outcome not_started;  // one still waiting for its first socket_action
  CHECK(test::run_until(*f.loop, [&] { return server->requests.size() == kCount; }));
  auto late = multi->perform(get(server->base_url() + "/late"), not_started.callback());
  multi.reset();
  for (auto& o : outs) CHECK(o.calls == 0);  // from the next iteration
  test::run_for(*f.loop, 30ms);
  for (auto& o : outs) {
    CHECK(o.calls == 1);
    REQUIRE(o.result);
    CHECK(o.code() == Errc::Cancelled);
  }
  CHECK(not_started.calls == 1);
  // Handles outliving their multi are inert.
  for (auto& h : handles) {
    CHECK_FALSE(h.active());
    h.pause();
    h.resume();
    h.cancel();
  }
  handles.clear();
  server.reset();
  f.check_no_leaks();
}

TEST_CASE("curl: callbacks never run inside perform() / even for immediate errors") {
  test::LoopFixture f;
  auto multi = make_multi(*f.loop);
  Outcome bad_method, bad_header, bad_url, refused;
  CurlRequest m = get("http://127.0.0.1:1/");
  m.method = "GE T";
  CurlRequest hd = get("http://127.0.0.1:1/");
  hd.headers.add("X-Evil", "a\r\nInjected: 1");
  auto h1 = multi->perform(std::move(m), bad_method.callback());
  auto h2 = multi->perform(std::move(hd), bad_header.callback());
  auto h3 = multi->perform(get("not a url at all"), bad_url.callback());
  auto h4 = multi->perform(get("http://127.0.0.1:" + std::to_string(closed_port()) + "/"), refused.callback());
  CHECK(bad_method.calls + bad_header.calls + bad_url.calls + refused.calls == 0);
  CHECK(test::run_until(*f.loop, [&] {
    return bad_method.calls && bad_header.calls && bad_url.calls && refused.calls;
  }));
  CHECK(bad_method.code() == Errc::InvalidArgument);
  CHECK(bad_header.code() == Errc::InvalidArgument);
  CHECK_FALSE(bad_url.ok());
  MESSAGE(bad_url.result->error().to_string());
  CHECK(refused.code() == Errc::BackendUnavailable);
  multi.reset();
  f.check_no_leaks();
}

TEST_CASE("curl: transfers started from done and from on_data callbacks run") {
  test::LoopFixture f;
  RawServer server(*f.loop, Endpoint::tcp("127.0.0.1", 0),
                   [](RawServer::Conn&, const Request& r) -> std::optional<std::string> {
                     if (r.target == "/stream") {
                       return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n";
                     }
                     return response(200, r.target);
                   });
  auto multi = make_multi(*f.loop);
  // A chain: each done starts the next request (the recursion rule: done runs outside curl).
  std::vector<std::string> chain;
  TransferHandle chained;
  std::function<void(int)> next = [&](int i) {
    chained = multi->perform(get(server.base_url() + "/step" + std::to_string(i)),
                             [&, i](Result<CurlResponse> r) {
                               REQUIRE(r.has_value());
                               chain.push_back(r->body);
                               if (i < 3) next(i + 1);
                             });
  };
  next(1);
  // And one started from inside on_data (inside libcurl's write callback).
  Outcome from_data, stream_done;
  TransferHandle inner;
  CurlStreamHandlers handlers;
  handlers.on_data = [&](std::string_view) {
    inner = multi->perform(get(server.base_url() + "/inner"), from_data.callback());
  };
  handlers.done = stream_done.callback();
  auto s = multi->stream(get(server.base_url() + "/stream"), std::move(handlers));
  CHECK(test::run_until(*f.loop, [&] { return chain.size() == 3 && from_data.calls == 1 && stream_done.calls == 1; }));
  CHECK(chain == std::vector<std::string>{"/step1", "/step2", "/step3"});
  REQUIRE(from_data.ok());
  CHECK(from_data.response().body == "/inner");
  CHECK(stream_done.ok());
}

TEST_CASE("curl: a stream without a body still gets its head / before done") {
  test::LoopFixture f;
  RawServer server(*f.loop, Endpoint::tcp("127.0.0.1", 0), answer_with(response(204, "")));
  auto multi = make_multi(*f.loop);
  std::vector<std::string> order;
  CurlStreamHandlers handlers;
  handlers.on_head = [&](const CurlResponse& head) { order.push_back("head " + std::to_string(head.status)); };
  handlers.on_data = [&](std::string_view) { order.push_back("data"); };
  handlers.done = [&](Result<CurlResponse> r) { order.push_back(r ? "done " + std::to_string(r->status) : "error"); };
  auto h = multi->stream(get(server.base_url() + "/empty"), std::move(handlers));
  CHECK(test::run_until(*f.loop, [&] { return order.size() == 2; }));
  CHECK(order == std::vector<std::string>{"head 204", "done 204"});
}

TEST_CASE("curl: transfers keep an owned loop running / an idle multi pins no loop") {
  // A listening POSIX socket that never accepts: the kernel completes the handshake and
  // queues the request, so only the transfer's timeout ends it.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
  REQUIRE(::listen(fd, 8) == 0);
  socklen_t len = sizeof(a);
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  const std::string url = "http://127.0.0.1:" + std::to_string(ntohs(a.sin_port)) + "/";

  {
    auto loop = Loop::create().value();
    auto multi = make_multi(*loop);
    CHECK(loop->run());  // idle: returns at once
    CurlRequest r = get(url);
    r.timeout = 150ms;
    Outcome out;
    auto h = multi->perform(std::move(r), out.callback());
    auto t0 = std::chrono::steady_clock::now();
    CHECK(loop->run());  // runs until the transfer ended and its done ran, then returns
    CHECK(std::chrono::steady_clock::now() - t0 >= 140ms);
    CHECK(out.calls == 1);
    CHECK(out.code() == Errc::Timeout);
  }
  {
    uv_loop_t host;
    REQUIRE(uv_loop_init(&host) == 0);
    {
      auto loop = Loop::wrap(&host).value();
      auto multi = make_multi(*loop);
      CHECK(uv_run(&host, UV_RUN_DEFAULT) == 0);  // nothing of ours keeps the host's loop
      CurlRequest r = get(url);
      r.timeout = 100ms;
      Outcome out;
      auto h = multi->perform(std::move(r), out.callback());
      uv_run(&host, UV_RUN_DEFAULT);
      CHECK(out.calls == 1);
    }
    uv_run(&host, UV_RUN_NOWAIT);
    CHECK(uv_loop_close(&host) == 0);
  }
  ::close(fd);
}

TEST_CASE("curl: HTTPS against a self-signed server with its certificate as the CA") {
  if (!have_openssl()) {
    MESSAGE("SKIPPED: the openssl CLI is not installed; HTTPS is not tested");
    return;
  }
  test::TempDir dir;
  REQUIRE(make_cert(dir, "server"));
  OpensslServer server;
  REQUIRE(server.start(dir.file("server.pem"), dir.file("server-key.pem")));
  test::LoopFixture f;
  auto multi = make_multi(*f.loop);
  const std::string url = "https://127.0.0.1:" + std::to_string(server.port()) + "/";

  Outcome ca_file, ca_pem, no_ca, no_verify;
  CurlRequest a = get(url);
  a.ca_file = dir.file("server.pem");
  auto h1 = multi->perform(std::move(a), ca_file.callback());
  CHECK(test::run_until(*f.loop, [&] { return ca_file.calls == 1; }));
  CurlRequest b = get(url);
  b.ca_pem = read_file(dir.file("server.pem"));
  auto h2 = multi->perform(std::move(b), ca_pem.callback());
  CHECK(test::run_until(*f.loop, [&] { return ca_pem.calls == 1; }));
  // Verification on, only the system's CAs: the self-signed certificate is refused.
  auto h3 = multi->perform(get(url), no_ca.callback());
  CHECK(test::run_until(*f.loop, [&] { return no_ca.calls == 1; }));
  CurlRequest d = get(url);
  d.verify_peer = false;
  auto h4 = multi->perform(std::move(d), no_verify.callback());
  CHECK(test::run_until(*f.loop, [&] { return no_verify.calls == 1; }));

  for (auto* o : {&ca_file, &ca_pem, &no_verify}) {
    REQUIRE(o->result);
    if (!o->ok()) MESSAGE(o->result->error().to_string());
    REQUIRE(o->ok());
    CHECK(o->response().status == 200);
    CHECK(o->response().body.find("<HTML>") != std::string::npos);
  }
  REQUIRE(no_ca.result);
  REQUIRE_FALSE(no_ca.ok());
  MESSAGE(no_ca.result->error().to_string());
  CHECK(no_ca.code() == Errc::PolicyDenied);
  CHECK(no_ca.result->error().message.find("certificate") != std::string::npos);
  multi.reset();
  f.check_no_leaks();
}

TEST_CASE("curl: HTTPS client certificates (files and PEM) for a server that demands one") {
  if (!have_openssl()) {
    MESSAGE("SKIPPED: the openssl CLI is not installed; HTTPS is not tested");
    return;
  }
  test::TempDir dir;
  REQUIRE(make_cert(dir, "server"));
  REQUIRE(make_cert(dir, "client"));
  OpensslServer server;
  // -Verify: a client certificate signed by client.pem (itself) is required.
  REQUIRE(server.start(dir.file("server.pem"), dir.file("server-key.pem"),
                       {"-Verify", "1", "-CAfile", dir.file("client.pem")}));
  test::LoopFixture f;
  auto multi = make_multi(*f.loop);
  const std::string url = "https://127.0.0.1:" + std::to_string(server.port()) + "/";
  Outcome files, pem, without;
  CurlRequest a = get(url);
  a.ca_file = dir.file("server.pem");
  a.client_cert_file = dir.file("client.pem");
  a.client_key_file = dir.file("client-key.pem");
  auto h1 = multi->perform(std::move(a), files.callback());
  CHECK(test::run_until(*f.loop, [&] { return files.calls == 1; }));
  CurlRequest b = get(url);
  b.ca_file = dir.file("server.pem");
  b.client_cert_pem = read_file(dir.file("client.pem"));
  b.client_key_pem = read_file(dir.file("client-key.pem"));
  auto h2 = multi->perform(std::move(b), pem.callback());
  CHECK(test::run_until(*f.loop, [&] { return pem.calls == 1; }));
  CurlRequest c = get(url);
  c.ca_file = dir.file("server.pem");
  c.timeout = 5s;
  auto h3 = multi->perform(std::move(c), without.callback());
  CHECK(test::run_until(*f.loop, [&] { return without.calls == 1; }));
  for (auto* o : {&files, &pem}) {
    REQUIRE(o->result);
    if (!o->ok()) MESSAGE(o->result->error().to_string());
    REQUIRE(o->ok());
    CHECK(o->response().status == 200);
  }
  REQUIRE(without.result);
  CHECK_FALSE(without.ok());
  if (!without.ok()) MESSAGE(without.result->error().to_string());
  multi.reset();
  f.check_no_leaks();
}

}  // TEST_SUITE
