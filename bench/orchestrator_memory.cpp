// The orchestrator's own memory while it tracks N terminals (default 10,000). N terminals of N
// real agents would measure the agents, not the orchestrator, and need N processes; so the
// Orchestrator here runs over a RECORDING backend: an in-process Backend that starts nothing
// and only keeps a TerminalInfo per terminal (name, ids, a unix-socket endpoint and a 32-byte
// key, as the local backend's look). This is a measurement of the orchestrator's memory, not
// a test of it.
//
//   terminals-bench-orchestrator [--terminals N] [--backend-only]
//
// Prints VmRSS and VmHWM (from /proc/self/status) and the bytes malloc has handed out
// (mallinfo2) before and after acquiring N distinct keys through the orchestrator, the
// serve defaults (8 provisions in flight, a queue of 256) respected by keeping at most 200
// acquires outstanding. The recording backend's own records are in the "after" figures;
// --backend-only provisions N terminals on the recording backend alone, without an
// orchestrator, so that share can be subtracted.

// GCC 12 at -O2 reports the std::variant inside a Result<TerminalInfo> taken by value in the
// callbacks of this file as maybe uninitialized (a false positive of its variant analysis, cf.
// GCC bug 107138; GCC 13 is clean), which -Werror builds (CI) turn into an error. The warning
// is placed in the library's headers, so it is turned off before they are included.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <malloc.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>

#include <terminals/backend.hpp>
#include <terminals/loop.hpp>

#include "bench_loop.hpp"

#include <terminals/orchestrator.hpp>

using namespace terminals;
using Clock = std::chrono::steady_clock;

namespace {

long status_kb(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  std::size_t n = std::strlen(key);
  while (std::getline(in, line)) {
    if (line.compare(0, n, key) == 0 && line.size() > n && line[n] == ':') return std::atol(line.c_str() + n + 1);
  }
  return -1;
}

struct Sample {
  long rss_kb, hwm_kb;
  double heap_kb;
};

Sample sample() {
  struct mallinfo2 mi = mallinfo2();
  return {status_kb("VmRSS"), status_kb("VmHWM"), static_cast<double>(mi.uordblks + mi.hblkhd) / 1024.0};
}

// Starts nothing. Completions are deferred to the loop's next iteration, as the Backend
// contract requires ("never inside the call").
class RecordingBackend final : public Backend {
 public:
  explicit RecordingBackend(Loop& loop) : loop_(loop) {}

  std::string_view kind() const override { return "recording"; }

  std::string terminal_name(std::string_view user_id, std::string_view policy_id,
                            std::string_view context_id) const override {
    // The local backend's names are "t" and 24 hex digits of a hash; the same length here.
    std::string all = std::string(user_id) + '\0' + std::string(policy_id) + '\0' + std::string(context_id);
    char buf[32];
    std::snprintf(buf, sizeof buf, "t%016zx%08zx", std::hash<std::string>{}(all),
                  std::hash<std::string>{}(all + "#") & 0xffffffffu);
    return buf;
  }

  void provision(const TerminalSpec& spec, Callback<TerminalInfo> done) override {
    TerminalInfo info;
    info.name = terminal_name(spec.user_id, spec.policy_id, spec.context_id);
    info.user_id = spec.user_id;
    info.policy_id = spec.policy_id;
    info.context_id = spec.context_id;
    info.state = TerminalState::Running;
    info.endpoint = Endpoint::unix_socket("/var/lib/terminals/run/" + info.name + "/agent.sock");
    static const char hex[] = "0123456789abcdef";
    info.api_key.resize(32);
    for (auto& c : info.api_key) c = hex[rng_() & 15];
    info.created_at = std::chrono::system_clock::now();
    records_[info.name] = info;
    loop_.defer([done = std::move(done), info = std::move(info)]() mutable { done(std::move(info)); });
  }

  void inspect(std::string_view name, Callback<TerminalInfo> done) override {
    auto it = records_.find(std::string(name));
    Result<TerminalInfo> r = it == records_.end() ? Result<TerminalInfo>(Error(Errc::NotFound, "no such terminal"))
                                                  : Result<TerminalInfo>(it->second);
    loop_.defer([done = std::move(done), r = std::move(r)]() mutable { done(std::move(r)); });
  }

  void stop(std::string_view name, Callback<void> done) override {
    auto it = records_.find(std::string(name));
    Status st = Status{};
    if (it == records_.end()) st = Error(Errc::NotFound, "no such terminal");
    else it->second.state = TerminalState::Stopped;
    loop_.defer([done = std::move(done), st]() mutable { done(st); });
  }

  void remove(std::string_view name, bool, Callback<void> done) override {
    Status st = records_.erase(std::string(name)) ? Status{} : Status(Error(Errc::NotFound, "no such terminal"));
    loop_.defer([done = std::move(done), st]() mutable { done(st); });
  }

  void list(Callback<std::vector<TerminalInfo>> done) override {
    std::vector<TerminalInfo> all;
    for (const auto& [_, info] : records_) all.push_back(info);
    loop_.defer([done = std::move(done), all = std::move(all)]() mutable { done(std::move(all)); });
  }

  std::size_t size() const { return records_.size(); }

 private:
  Loop& loop_;
  std::map<std::string, TerminalInfo> records_;
  std::minstd_rand rng_{42};
};

using bench::run_until;

std::string user_id(int i) {
  // Open WebUI user ids are UUIDs: 36 characters.
  char buf[40];
  std::snprintf(buf, sizeof buf, "0b5e1a2c-7d3f-4e89-a1b2-%012d", i);
  return buf;
}

void print(const char* label, const Sample& s) {
  std::printf("%s rss_kb=%ld hwm_kb=%ld heap_kb=%.0f\n", label, s.rss_kb, s.hwm_kb, s.heap_kb);
}

}  // namespace

int main(int argc, char** argv) {
  int count = 10000;
  bool backend_only = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--terminals" && i + 1 < argc) count = std::atoi(argv[++i]);
    else if (a == "--backend-only") backend_only = true;
    else {
      std::fprintf(stderr, "usage: %s [--terminals N] [--backend-only]\n", argv[0]);
      return 2;
    }
  }
  auto loop = Loop::create().value();
  RecordingBackend backend(*loop);

  if (backend_only) {
    auto before = sample();
    int done = 0;
    for (int i = 0; i < count; ++i) {
      TerminalSpec spec;
      spec.user_id = user_id(i);
      backend.provision(spec, [&](Result<TerminalInfo>) { ++done; });
      if (i % 200 == 199) run_until(*loop, [&] { return done == i + 1; });
    }
    run_until(*loop, [&] { return done == count; });
    auto after = sample();
    std::printf("recording_backend_only terminals=%zu\n", backend.size());
    print("before", before);
    print("after", after);
    return 0;
  }

  OrchestratorOptions options;  // serve's defaults: 8 provisions in flight, a queue of 256
  auto orchestrator = Orchestrator::create(
      *loop, backend, [](const TerminalKey&) { return Result<TerminalSpec>(TerminalSpec{}); }, options);
  if (!orchestrator) {
    std::fprintf(stderr, "orchestrator: %s\n", orchestrator.error().message.c_str());
    return 1;
  }
  bool started = false;
  (*orchestrator)->start([&](Status st) {
    if (!st) std::fprintf(stderr, "start: %s\n", st.error().message.c_str());
    started = true;
  });
  run_until(*loop, [&] { return started; });

  auto before = sample();
  int next = 0, ok = 0, failed = 0, outstanding = 0;
  auto t0 = Clock::now();
  while (next < count || outstanding > 0) {
    while (next < count && outstanding < 200) {
      TerminalKey key;
      key.user_id = user_id(next++);
      ++outstanding;
      (*orchestrator)->acquire(key, [&](Result<TerminalInfo> r) {
        --outstanding;
        if (r) ++ok;
        else if (++failed <= 3) std::fprintf(stderr, "acquire: %s\n", r.error().message.c_str());
      });
    }
    (void)loop->run_nowait();
  }
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  auto after = sample();
  // The admin API's listing of all of them: a transient copy.
  auto rows = (*orchestrator)->list();
  std::size_t listed = rows.size();
  rows.clear();
  rows.shrink_to_fit();
  auto after_list = sample();

  std::printf("orchestrator terminals=%d acquired=%d failed=%d tracked=%zu acquire_s=%.2f backend=recording\n",
              count, ok, failed, listed, secs);
  print("before", before);
  print("after", after);
  print("after_list", after_list);
  orchestrator->reset();
  return failed == 0 && ok == count ? 0 : 1;
}
