#include <doctest/doctest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <sys/un.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "support/loop_runner.hpp"
#include "terminals/stream.hpp"
#include "uv/uv_stream.hpp"

using namespace terminals;
using namespace std::chrono_literals;
using terminals::detail::Listener;

namespace {

// An echo server on `endpoint`; accepted streams are kept in `conns`.
struct Echo {
  std::vector<StreamPtr> conns;
  std::unique_ptr<Listener> listener;

  Echo(Loop& loop, const Endpoint& endpoint) {
    listener = Listener::create(loop, endpoint, {}, [this](Result<StreamPtr> s) {
      REQUIRE(s);
      Stream* raw = s.value().get();
      conns.push_back(std::move(s).value());
      raw->read_start([raw](Result<std::string_view> data) {
        if (data) raw->write(*data);
        else raw->shutdown();
      });
    }).value();
  }
};

void echo_roundtrip(test::LoopFixture& f, const Endpoint& where) {
  Echo echo(*f.loop, where);
  StreamPtr client;
  std::string got;
  bool eof = false;
  Stream::connect(*f.loop, echo.listener->local_endpoint(), 2s, [&](Result<StreamPtr> s) {
    REQUIRE(s);
    client = std::move(s).value();
    client->read_start([&](Result<std::string_view> d) {
      if (d) got.append(*d);
      else eof = d.error().code == Errc::Eof;
    });
    client->write("hello ");
    client->write("world");
    client->shutdown();
  });
  CHECK(test::run_until(*f.loop, [&] { return eof; }));
  CHECK(got == "hello world");
  client.reset();
  echo.conns.clear();
  echo.listener.reset();
  f.check_no_leaks();
}

}  // namespace

TEST_SUITE("unit") {

TEST_CASE("stream: echo over TCP loopback with half-close") {
  test::LoopFixture f;
  echo_roundtrip(f, Endpoint::tcp("127.0.0.1", 0));
}

TEST_CASE("stream: echo over a unix socket created with mode 0600 / stale socket replaced") {
  test::LoopFixture f;
  test::TempDir dir;
  std::string path = dir.file("s.sock");
  {
    // Leave a stale socket file behind, as a crashed process would.
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path.c_str());
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0);
    ::close(fd);
  }
  {
    Echo echo(*f.loop, Endpoint::unix_socket(path));
    struct stat st{};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    // A second listener on a live socket is refused, not stolen.
    auto second = Listener::create(*f.loop, Endpoint::unix_socket(path), {}, [](Result<StreamPtr>) {});
    CHECK_FALSE(second);
    CHECK(second.error().code == Errc::AlreadyExists);
  }
  CHECK(::access(path.c_str(), F_OK) != 0);  // removed on close
  echo_roundtrip(f, Endpoint::unix_socket(path));
}

TEST_CASE("stream: a unix listener in a missing directory names the directory") {
  test::LoopFixture f;
  test::TempDir dir;
  // libuv alone would say EACCES here.
  auto l = Listener::create(*f.loop, Endpoint::unix_socket(dir.file("gone/s.sock")), {},
                            [](Result<StreamPtr>) {});
  REQUIRE_FALSE(l);
  CHECK(l.error().code == Errc::NotFound);
  CHECK(l.error().message.find(dir.file("gone") + " does not exist") != std::string::npos);
}

TEST_CASE("stream: connect errors are reported once / asynchronously / with a reason") {
  test::LoopFixture f;
  test::TempDir dir;
  int calls = 0;
  Error err;
  Stream::connect(*f.loop, Endpoint::unix_socket(dir.file("missing.sock")), 1s, [&](Result<StreamPtr> s) {
    ++calls;
    REQUIRE_FALSE(s);
    err = s.error();
  });
  CHECK(calls == 0);  // never synchronous
  CHECK(test::run_until(*f.loop, [&] { return calls == 1; }));
  CHECK(err.code == Errc::NotFound);
  CHECK(err.message.find("missing.sock") != std::string::npos);

  // Refused on TCP: bind a port, close it, connect to it.
  auto l = Listener::create(*f.loop, Endpoint::tcp("127.0.0.1", 0), {}, [](Result<StreamPtr>) {}).value();
  auto port = l->local_endpoint().port;
  l.reset();
  calls = 0;
  Stream::connect(*f.loop, Endpoint::tcp("127.0.0.1", port), 1s, [&](Result<StreamPtr> s) {
    ++calls;
    REQUIRE_FALSE(s);
    err = s.error();
  });
  CHECK(test::run_until(*f.loop, [&] { return calls == 1; }));
  CHECK(err.code == Errc::Io);
  CHECK(err.native != 0);
  test::run_for(*f.loop, 20ms);
  CHECK(calls == 1);
  f.check_no_leaks();
}

TEST_CASE("stream: connect times out against a TCP listener whose accept queue is full") {
  test::LoopFixture f;
  // A loopback listener with backlog 0 that never accepts: once its queue is full the kernel
  // drops further SYNs, so those connects hang until our timeout fires.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0);
  REQUIRE(::listen(fd, 0) == 0);
  socklen_t len = sizeof(sa);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  const auto port = ntohs(sa.sin_port);
  std::vector<StreamPtr> queued;
  int timeouts = 0, connected = 0, other = 0;
  std::string timeout_message;
  for (int i = 0; i < 6; ++i) {
    Stream::connect(*f.loop, Endpoint::tcp("127.0.0.1", port), 300ms, [&](Result<StreamPtr> s) {
      if (s) {
        ++connected;
        queued.push_back(std::move(s).value());
      } else if (s.error().code == Errc::Timeout) {
        ++timeouts;
        timeout_message = s.error().message;
      } else {
        ++other;
      }
    });
  }
  CHECK(test::run_until(*f.loop, [&] { return timeouts + connected + other == 6; }, 5s));
  CHECK(timeouts >= 1);
  CHECK(timeout_message.find("timed out after 300 ms") != std::string::npos);
  queued.clear();
  ::close(fd);
  f.check_no_leaks();
}

TEST_CASE("stream: write backpressure: false above the high watermark / drain below the low one") {
  test::LoopFixture f;
  std::vector<StreamPtr> server_side;
  auto l = Listener::create(*f.loop, Endpoint::tcp("127.0.0.1", 0), {}, [&](Result<StreamPtr> s) {
    server_side.push_back(std::move(s).value());  // accepted but not read: the kernel fills up
  }).value();
  StreamPtr c;
  Stream::connect(*f.loop, l->local_endpoint(), 2s, [&](Result<StreamPtr> s) { c = std::move(s).value(); });
  REQUIRE(test::run_until(*f.loop, [&] { return c && !server_side.empty(); }));
  c->set_watermarks(64 * 1024, 256 * 1024);
  int drains = 0;
  c->set_drain_handler([&] { ++drains; });
  std::string chunk(64 * 1024, 'x');
  std::size_t written = 0;
  bool accepted = true;
  for (int i = 0; i < 1000 && accepted; ++i) {
    accepted = c->write(chunk);
    written += chunk.size();
  }
  REQUIRE_FALSE(accepted);  // the producer was told to stop...
  CHECK(c->write_queue_size() > 256 * 1024);
  CHECK(c->write_queue_size() < 256 * 1024 + chunk.size() + 1);  // ...and the queue stayed bounded
  // Now read everything on the other side; the drain handler fires once the queue empties.
  std::size_t received = 0;
  server_side[0]->read_start([&](Result<std::string_view> d) {
    if (d) received += d->size();
  });
  CHECK(test::run_until(*f.loop, [&] { return received == written; }));
  CHECK(drains == 1);
  CHECK(c->write_queue_size() == 0);
  c.reset();
  server_side.clear();
  l.reset();
  f.check_no_leaks();
}

TEST_CASE("stream: closing with queued writes cancels their callbacks exactly once") {
  test::LoopFixture f;
  std::vector<StreamPtr> server_side;
  auto l = Listener::create(*f.loop, Endpoint::tcp("127.0.0.1", 0), {}, [&](Result<StreamPtr> s) {
    server_side.push_back(std::move(s).value());
  }).value();
  StreamPtr c;
  Stream::connect(*f.loop, l->local_endpoint(), 2s, [&](Result<StreamPtr> s) { c = std::move(s).value(); });
  REQUIRE(test::run_until(*f.loop, [&] { return c && !server_side.empty(); }));
  int ok = 0, cancelled = 0, other = 0;
  std::string big(8 << 20, 'y');  // more than the socket buffers hold
  for (int i = 0; i < 3; ++i) {
    c->write(big, [&](Status st) {
      if (st) ++ok;
      else if (st.error().code == Errc::Cancelled) ++cancelled;
      else ++other;
    });
  }
  c.reset();  // destroyed with writes queued
  CHECK(test::run_until(*f.loop, [&] { return ok + cancelled + other == 3; }));
  CHECK(cancelled >= 1);
  test::run_for(*f.loop, 20ms);
  CHECK(ok + cancelled + other == 3);
  server_side.clear();
  l.reset();
  f.check_no_leaks();
}

TEST_CASE("stream: peer reset mid-read ends reading with one error / read_stop pauses delivery") {
  test::LoopFixture f;
  std::vector<StreamPtr> server_side;
  auto l = Listener::create(*f.loop, Endpoint::tcp("127.0.0.1", 0), {}, [&](Result<StreamPtr> s) {
    server_side.push_back(std::move(s).value());
  }).value();
  StreamPtr c;
  Stream::connect(*f.loop, l->local_endpoint(), 2s, [&](Result<StreamPtr> s) { c = std::move(s).value(); });
  REQUIRE(test::run_until(*f.loop, [&] { return c && !server_side.empty(); }));
  std::string got;
  int errors = 0;
  c->read_start([&](Result<std::string_view> d) {
    if (d) got.append(*d);
    else ++errors;
  });
  c->read_stop();
  server_side[0]->write("paused?");
  test::run_for(*f.loop, 30ms);
  CHECK(got.empty());  // not delivered while stopped
  c->read_resume();
  CHECK(test::run_until(*f.loop, [&] { return got == "paused?"; }));
  server_side.clear();  // closes the server side
  CHECK(test::run_until(*f.loop, [&] { return errors == 1; }));
  test::run_for(*f.loop, 20ms);
  CHECK(errors == 1);
  c.reset();
  l.reset();
  f.check_no_leaks();
}

}  // TEST_SUITE
