// Cold start of the local backend: for each of N new users, the time from "first request of a
// new user" (provision) to the first byte of an authenticated answer from its agent. Prints
// median, p90 and max in milliseconds, then removes every terminal, home and account it made.
//
//   terminals-bench-coldstart --agent PATH [--users N] [--isolation none|user|sandbox]

#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include <terminals/http_client.hpp>
#include <terminals/local_backend.hpp>
#include <terminals/loop.hpp>

using namespace terminals;
using Clock = std::chrono::steady_clock;

namespace {

template <class Pred>
bool run_until(Loop& loop, Pred done, std::chrono::seconds limit) {
  auto deadline = Clock::now() + limit;
  while (!done()) {
    if (Clock::now() > deadline) return false;
    (void)loop.run_nowait();
    if (!done()) {
      // run_nowait returns at once when nothing is ready; a short nap keeps this from spinning.
      struct timespec ts {0, 200000};
      nanosleep(&ts, nullptr);
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::string agent;
  int users = 30;
  std::optional<Isolation> isolation;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--agent" && i + 1 < argc) agent = argv[++i];
    else if (a == "--users" && i + 1 < argc) users = std::atoi(argv[++i]);
    else if (a == "--isolation" && i + 1 < argc) {
      auto iso = parse_isolation(argv[++i]);
      if (!iso) {
        std::fprintf(stderr, "%s\n", iso.error().message.c_str());
        return 2;
      }
      isolation = *iso;
    } else {
      std::fprintf(stderr, "usage: %s --agent PATH [--users N] [--isolation none|user|sandbox]\n", argv[0]);
      return 2;
    }
  }
  char tmpl[] = "/tmp/terminals-coldstart-XXXXXX";
  if (!mkdtemp(tmpl)) return 1;
  std::string data = std::string(tmpl) + "/data";
  chmod(tmpl, 0711);

  auto loop = Loop::create().value();
  LocalBackendOptions options;
  options.data_dir = data;
  options.agent_path = agent;
  options.default_isolation = isolation;
  auto backend = LocalBackend::create(*loop, options);
  if (!backend) {
    std::fprintf(stderr, "local backend: %s\n", backend.error().message.c_str());
    return 1;
  }
  const Isolation used = (*backend)->default_isolation();
  auto client = HttpClient::create(*loop);
  std::vector<double> ms;
  std::vector<std::string> names;
  int failures = 0;
  // One warm-up user: the first useradd and exec pay for cold caches that no later user does.
  for (int i = -1; i < users; ++i) {
    TerminalSpec spec;
    spec.user_id = "bench-user-" + std::to_string(i) + "-" + std::to_string(::getpid());
    auto t0 = Clock::now();
    std::optional<Result<TerminalInfo>> info;
    (*backend)->provision(spec, [&](Result<TerminalInfo> r) { info.emplace(std::move(r)); });
    if (!run_until(*loop, [&] { return info.has_value(); }, std::chrono::seconds(30)) || !*info) {
      ++failures;
      if (info && !*info) std::fprintf(stderr, "provision: %s\n", info->error().message.c_str());
      continue;
    }
    names.push_back((*info)->name);
    RequestHead head;
    head.method = "GET";
    head.target = "/files/cwd";
    head.headers.add("Authorization", "Bearer " + (*info)->api_key);
    bool first_byte = false;
    bool failed = false;
    auto exchange = client->request((*info)->endpoint, std::move(head), [&](Result<ResponseHead> r) {
      if (r && r->status == 200) first_byte = true;
      else failed = true;
    });
    run_until(*loop, [&] { return first_byte || failed; }, std::chrono::seconds(10));
    auto t1 = Clock::now();
    if (!first_byte) {
      ++failures;
      continue;
    }
    if (i >= 0) ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  for (const auto& name : names) {
    bool done = false;
    (*backend)->remove(name, true, [&](Status) { done = true; });
    run_until(*loop, [&] { return done; }, std::chrono::seconds(20));
  }
  client.reset();
  backend->reset();
  std::string cleanup = std::string("rm -rf ") + tmpl;
  (void)std::system(cleanup.c_str());
  if (ms.empty()) {
    std::fprintf(stderr, "no successful cold start (%d failures)\n", failures);
    return 1;
  }
  std::sort(ms.begin(), ms.end());
  auto pct = [&](double p) { return ms[std::min(ms.size() - 1, static_cast<std::size_t>(p * ms.size()))]; };
  std::printf("cold_start users=%zu isolation=%s median_ms=%.2f p90_ms=%.2f max_ms=%.2f failures=%d\n",
              ms.size(), isolation_name(used),
              ms[ms.size() / 2], pct(0.9), ms.back(), failures);
  return failures == 0 ? 0 : 1;
}
