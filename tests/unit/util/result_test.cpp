#include <doctest/doctest.h>

#include <memory>
#include <string>

#include "terminals/endpoint.hpp"
#include "terminals/function.hpp"
#include "terminals/result.hpp"

using namespace terminals;

TEST_SUITE("unit") {

TEST_CASE("result: value / error / void and error_code interop") {
  Result<int> ok = 42;
  CHECK(ok);
  CHECK(ok.value() == 42);
  CHECK(*ok == 42);
  Result<int> bad = Error(Errc::NotFound, "no such terminal");
  CHECK_FALSE(bad);
  CHECK(bad.error().code == Errc::NotFound);
  CHECK(bad.value_or(7) == 7);
  CHECK(bad.error().to_string() == "NotFound: no such terminal");

  Status s;
  CHECK(s);
  Status f = Error(Errc::Timeout, "slow");
  CHECK_FALSE(f);
  CHECK(f.error().code == Errc::Timeout);

  std::error_code ec = Errc::PolicyDenied;
  CHECK(ec.category().name() == std::string("terminals"));
  CHECK(ec.message() == "PolicyDenied");

  Result<std::unique_ptr<int>> moved = std::make_unique<int>(3);
  auto p = std::move(moved).value();
  CHECK(*p == 3);
}

TEST_CASE("move-only function: owns move-only state / small and large captures / reset") {
  auto owned = std::make_unique<int>(5);
  MoveOnlyFunction<int(int)> f = [p = std::move(owned)](int x) { return *p + x; };
  CHECK(f(1) == 6);
  MoveOnlyFunction<int(int)> g = std::move(f);
  CHECK_FALSE(f);
  CHECK(g(2) == 7);

  // A capture too large for the inline buffer goes to the heap and still moves correctly.
  struct Big {
    char pad[256];
    std::shared_ptr<int> tracked;
  };
  auto token = std::make_shared<int>(9);
  std::weak_ptr<int> watch = token;
  MoveOnlyFunction<int()> big = [b = Big{{}, std::move(token)}] { return *b.tracked; };
  MoveOnlyFunction<int()> big2;
  big2 = std::move(big);
  CHECK(big2() == 9);
  big2 = nullptr;
  CHECK(watch.expired());
}

TEST_CASE("endpoint: parse every spelling and reject bad ones with a reason") {
  auto e = Endpoint::parse("tcp://127.0.0.1:8000").value();
  CHECK(e.kind == Endpoint::Kind::Tcp);
  CHECK(e.host == "127.0.0.1");
  CHECK(e.port == 8000);
  CHECK(Endpoint::parse("localhost:80").value().host == "localhost");
  auto v6 = Endpoint::parse("[::1]:9").value();
  CHECK(v6.host == "::1");
  CHECK(v6.to_string() == "tcp://[::1]:9");
  auto u = Endpoint::parse("unix:/run/a.sock").value();
  CHECK(u.kind == Endpoint::Kind::Unix);
  CHECK(u.path == "/run/a.sock");
  CHECK(Endpoint::parse("unix:///run/a.sock").value().path == "/run/a.sock");
  CHECK(Endpoint::parse(u.to_string()).value() == u);
  CHECK(Endpoint::parse("http://127.0.0.1:1/").value().port == 1);
  for (const char* badtext : {"", "127.0.0.1", "127.0.0.1:", "host:99999", ":80", "unix:",
                              "[::1:80", "h:8x"}) {
    auto r = Endpoint::parse(badtext);
    CHECK_MESSAGE(!r, badtext);
    if (!r) {
      CHECK(r.error().code == Errc::InvalidArgument);
      CHECK(r.error().message.find("tcp://HOST:PORT") != std::string::npos);
    }
  }
  CHECK_FALSE(Endpoint::parse("unix:/" + std::string(200, 'x')));
}

}  // TEST_SUITE
