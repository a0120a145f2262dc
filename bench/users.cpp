// N new users at once through `terminals-cli serve`: N requests (GET /files/cwd, each with its
// own X-User-Id, none of which has a terminal yet) sent together on N connections, each timed
// from its send to the end of its answer, which includes the provision of that user's
// terminal. Prints how many were served (200) and the latency's p50, p90, p99 and max.
//
//   TERMINALS_API_KEY=KEY terminals-bench-users --port PORT [--users N] [--prefix ID]
//
// The users are ID-0 .. ID-(N-1) (default prefix: random per run).

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <terminals/http_client.hpp>
#include <terminals/loop.hpp>

using namespace terminals;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  int port = 0;
  int users = 100;
  std::string prefix;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--port" && i + 1 < argc) port = std::atoi(argv[++i]);
    else if (a == "--users" && i + 1 < argc) users = std::atoi(argv[++i]);
    else if (a == "--prefix" && i + 1 < argc) prefix = argv[++i];
    else port = -1;
  }
  const char* key = std::getenv("TERMINALS_API_KEY");
  if (port <= 0 || port > 65535 || users <= 0 || !key) {
    std::fprintf(stderr, "usage: TERMINALS_API_KEY=KEY %s --port PORT [--users N] [--prefix ID]\n", argv[0]);
    return 2;
  }
  if (prefix.empty()) {
    std::random_device rd;
    char buf[24];
    std::snprintf(buf, sizeof buf, "new-%08x", rd());
    prefix = buf;
  }
  auto loop = Loop::create().value();
  ClientOptions co;
  co.read_timeout = std::chrono::seconds(120);
  auto client = HttpClient::create(*loop, co);
  auto upstream = Endpoint::tcp("127.0.0.1", static_cast<std::uint16_t>(port));

  std::vector<double> ms;
  std::map<std::string, int> outcomes;  // "200", "503", "error: ..." -> count
  int replied = 0;
  auto t_start = Clock::now();
  for (int i = 0; i < users; ++i) {
    RequestHead head;
    head.method = "GET";
    head.target = "/files/cwd";
    head.headers.add("Authorization", std::string("Bearer ") + key);
    head.headers.add("X-User-Id", prefix + "-" + std::to_string(i));
    auto t0 = Clock::now();
    client->fetch(upstream, std::move(head), "", [&, t0](Result<FetchResponse> r) {
      ++replied;
      double took = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
      if (r && r->head.status == 200) {
        ms.push_back(took);
        ++outcomes["200"];
      } else if (r) {
        ++outcomes[std::to_string(r->head.status)];
        if (outcomes[std::to_string(r->head.status)] == 1) {
          std::fprintf(stderr, "HTTP %d: %.200s\n", r->head.status, r->body.c_str());
        }
      } else {
        ++outcomes["error: " + r.error().message];
      }
      if (replied == users) loop->stop();
    });
  }
  // run() blocks in epoll, so the load generator takes no CPU from serve while it waits.
  auto timeout = loop->create_timer([&] { loop->stop(); });
  timeout->start(std::chrono::seconds(300));
  (void)loop->run();
  double wall_ms = std::chrono::duration<double, std::milli>(Clock::now() - t_start).count();
  client.reset();

  std::sort(ms.begin(), ms.end());
  // Nearest rank: of 100 values, p99 is the 99th smallest, p50 the 50th.
  auto pct = [&](double p) {
    if (ms.empty()) return 0.0;
    auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(ms.size())));
    return ms[std::clamp<std::size_t>(rank, 1, ms.size()) - 1];
  };
  std::string other;
  for (const auto& [what, n] : outcomes) {
    if (what != "200") other += " [" + what + "]x" + std::to_string(n);
  }
  std::printf("users n=%d served=%zu p50_ms=%.1f p90_ms=%.1f p99_ms=%.1f max_ms=%.1f wall_ms=%.1f%s%s\n", users,
              ms.size(), pct(0.5), pct(0.9), pct(0.99), ms.empty() ? 0.0 : ms.back(), wall_ms,
              other.empty() ? "" : " other:", other.c_str());
  return static_cast<int>(ms.size()) == users ? 0 : 1;
}
