// Cold start of a backend: for each of N new users, the time from "first request of a new
// user" (provision) to the first byte of an authenticated answer from its agent. Prints median,
// p90 and max in milliseconds, then removes every terminal, home and account it made.
//
//   terminals-bench-coldstart [--backend local|docker] [--users N] [--data-dir DIR] [--samples]
//       local:  --agent PATH [--isolation none|user|sandbox]
//       docker: [--image IMG] (default terminals-agent:dev; the engine from $DOCKER_HOST)
//
// --samples prints every measurement (sample_ms=X, one a line, in the order taken) before the
// summary line, for a caller that pools several runs. User ids are random per run, so names
// never collide with an earlier run's leftovers.

#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <terminals/docker_backend.hpp>
#include <terminals/http_client.hpp>
#include <terminals/local_backend.hpp>
#include <terminals/loop.hpp>

#include "bench_loop.hpp"

using namespace terminals;
using Clock = std::chrono::steady_clock;

namespace {

using bench::run_until;

}  // namespace

int main(int argc, char** argv) {
  std::string kind = "local";
  std::string agent;
  std::string image = "terminals-agent:dev";
  std::string data_dir;
  int users = 30;
  bool samples = false;
  std::optional<Isolation> isolation;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--agent" && i + 1 < argc) agent = argv[++i];
    else if (a == "--backend" && i + 1 < argc) kind = argv[++i];
    else if (a == "--image" && i + 1 < argc) image = argv[++i];
    else if (a == "--data-dir" && i + 1 < argc) data_dir = argv[++i];
    else if (a == "--users" && i + 1 < argc) users = std::atoi(argv[++i]);
    else if (a == "--samples") samples = true;
    else if (a == "--isolation" && i + 1 < argc) {
      auto iso = parse_isolation(argv[++i]);
      if (!iso) {
        std::fprintf(stderr, "%s\n", iso.error().message.c_str());
        return 2;
      }
      isolation = *iso;
    } else {
      kind = "";
      break;
    }
  }
  if (kind != "local" && kind != "docker") {
    std::fprintf(stderr,
                 "usage: %s [--backend local|docker] [--users N] [--data-dir DIR] [--samples]\n"
                 "          [--agent PATH] [--isolation none|user|sandbox]   (local)\n"
                 "          [--image IMG]                                    (docker)\n",
                 argv[0]);
    return 2;
  }
  // Without --data-dir: a fresh directory, removed at the end; a given one is left in place.
  std::string scratch;
  if (data_dir.empty()) {
    char tmpl[] = "/tmp/terminals-coldstart-XXXXXX";
    if (!mkdtemp(tmpl)) return 1;
    scratch = tmpl;
    chmod(tmpl, 0711);
    data_dir = scratch + "/data";
  }

  auto loop = Loop::create().value();
  std::unique_ptr<Backend> backend;
  std::string label;
  if (kind == "local") {
    LocalBackendOptions options;
    options.data_dir = data_dir;
    options.agent_path = agent;
    options.default_isolation = isolation;
    auto local = LocalBackend::create(*loop, options);
    if (!local) {
      std::fprintf(stderr, "local backend: %s\n", local.error().message.c_str());
      return 1;
    }
    label = std::string("isolation=") + isolation_name((*local)->default_isolation());
    backend = std::move(*local);
  } else {
    DockerBackendOptions options;
    options.data_dir = data_dir;
    options.default_image = image;
    options.pull_missing = false;  // no registry here, and a pull would be timed
    auto docker = DockerBackend::create(*loop, options);
    if (!docker) {
      std::fprintf(stderr, "docker backend: %s\n", docker.error().message.c_str());
      return 1;
    }
    label = "backend=docker image=" + image;
    backend = std::move(*docker);
  }
  // Docker removes each terminal right after its measurement, as the bare `docker run`
  // baseline in bench/run does, so both are timed against an engine with the same containers.
  const bool remove_each = kind == "docker";
  std::string run_id;
  {
    std::random_device rd;
    char buf[17];
    std::snprintf(buf, sizeof buf, "%08x%08x", rd(), rd());
    run_id = buf;
  }
  auto client = HttpClient::create(*loop);
  std::vector<double> ms;
  std::vector<std::string> names;
  int failures = 0;
  auto remove_all = [&] {
    for (const auto& name : names) {
      bool done = false;
      backend->remove(name, true, [&](Status st) {
        if (!st) std::fprintf(stderr, "remove %s: %s\n", name.c_str(), st.error().message.c_str());
        done = true;
      });
      run_until(*loop, [&] { return done; }, std::chrono::seconds(30));
    }
    names.clear();
  };
  // One warm-up user: the first useradd, exec or container start pays for cold caches that no
  // later user does.
  for (int i = -1; i < users; ++i) {
    TerminalSpec spec;
    spec.user_id = "bench-" + run_id + "-" + std::to_string(i);
    auto t0 = Clock::now();
    std::optional<Result<TerminalInfo>> info;
    backend->provision(spec, [&](Result<TerminalInfo> r) { info.emplace(std::move(r)); });
    if (!run_until(*loop, [&] { return info.has_value(); }, std::chrono::seconds(60)) || !*info) {
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
    exchange.reset();
    if (remove_each) remove_all();
    if (!first_byte) {
      ++failures;
      std::fprintf(stderr, "GET /files/cwd on %s: no 200\n", (*info)->endpoint.to_string().c_str());
      continue;
    }
    if (i >= 0) ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  remove_all();
  client.reset();
  backend.reset();
  if (!scratch.empty()) {
    std::string cleanup = "rm -rf " + scratch;
    (void)std::system(cleanup.c_str());
  }
  if (ms.empty()) {
    std::fprintf(stderr, "no successful cold start (%d failures)\n", failures);
    return 1;
  }
  if (samples) {
    for (double v : ms) std::printf("sample_ms=%.2f\n", v);
  }
  std::sort(ms.begin(), ms.end());
  auto pct = [&](double p) { return ms[std::min(ms.size() - 1, static_cast<std::size_t>(p * ms.size()))]; };
  std::printf("cold_start users=%zu %s median_ms=%.2f p90_ms=%.2f max_ms=%.2f failures=%d\n",
              ms.size(), label.c_str(), ms[ms.size() / 2], pct(0.9), ms.back(), failures);
  return failures == 0 ? 0 : 1;
}
