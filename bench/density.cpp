// Density of the local backend: N terminals provisioned side by side, each answering one
// GET /files/cwd, then left idle. Prints the time to provision them, the memory of each
// terminal's agent (VmRSS, and PSS from /proc/PID/smaps_rollup, which splits the pages the
// agents share, the binary's and the libraries', between them: RSS counts those N times) and
// of each terminal's whole process tree (bubblewrap too, in a sandbox), and how much of the
// host's MemAvailable they took. Then removes every terminal, home and account it made.
//
//   terminals-bench-density --agent PATH [--terminals N] [--isolation none|user|sandbox]
//                           [--concurrency C] [--settle-ms MS]
//
// --concurrency: provisions in flight at once (default 8, serve's max_concurrent_provisions).
// Output: key=value lines, for bench/run.

#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <terminals/http_client.hpp>
#include <terminals/local_backend.hpp>
#include <terminals/loop.hpp>

#include "bench_loop.hpp"

using namespace terminals;
using Clock = std::chrono::steady_clock;

namespace {

using bench::run_until;

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The number after "Key:" in a /proc file of "Key: value kB" lines; -1 when absent.
long proc_kb(const std::string& path, const char* key) {
  std::ifstream in(path);
  std::string line;
  std::size_t n = std::strlen(key);
  while (std::getline(in, line)) {
    if (line.compare(0, n, key) == 0 && line.size() > n && line[n] == ':') return std::atol(line.c_str() + n + 1);
  }
  return -1;
}

long mem_available_kb() { return proc_kb("/proc/meminfo", "MemAvailable"); }

// The kernel's share of a terminal, which no process's RSS shows: namespaces, sockets and
// inodes (slab), page tables, kernel stacks, and tmpfs pages (Shmem).
struct KernelMem {
  long slab, page_tables, kernel_stack, shmem;
};
KernelMem kernel_mem() {
  return {proc_kb("/proc/meminfo", "Slab"), proc_kb("/proc/meminfo", "PageTables"),
          proc_kb("/proc/meminfo", "KernelStack"), proc_kb("/proc/meminfo", "Shmem")};
}

struct Proc {
  pid_t ppid = 0;
  std::string comm;
};

// Every process: its parent and name (from /proc/PID/stat; the name may hold spaces and
// parentheses, so it is what lies between the first '(' and the last ')').
std::map<pid_t, Proc> processes() {
  std::map<pid_t, Proc> out;
  DIR* d = opendir("/proc");
  if (!d) return out;
  while (dirent* e = readdir(d)) {
    pid_t pid = std::atoi(e->d_name);
    if (pid <= 0) continue;
    std::string stat = read_text("/proc/" + std::to_string(pid) + "/stat");
    auto open = stat.find('(');
    auto close = stat.rfind(')');
    if (open == std::string::npos || close == std::string::npos || close + 4 > stat.size()) continue;
    Proc p;
    p.comm = stat.substr(open + 1, close - open - 1);
    // After ") " come the state and then the parent's pid.
    p.ppid = std::atoi(stat.c_str() + close + 4);
    out[pid] = p;
  }
  closedir(d);
  return out;
}

std::vector<pid_t> tree(const std::map<pid_t, Proc>& all, pid_t root) {
  std::vector<pid_t> out{root};
  for (std::size_t i = 0; i < out.size(); ++i) {
    for (const auto& [pid, p] : all) {
      if (p.ppid == out[i]) out.push_back(pid);
    }
  }
  return out;
}

// The "pid" of a terminal's record (data/terminals/<name>.json), the process the backend
// started: the agent, or bubblewrap around it.
pid_t record_pid(const std::string& data_dir, const std::string& name) {
  std::string json = read_text(data_dir + "/terminals/" + name + ".json");
  auto at = json.find("\"pid\":");
  return at == std::string::npos ? 0 : static_cast<pid_t>(std::atol(json.c_str() + at + 6));
}

struct Stats {
  double median = 0, p90 = 0, max = 0, sum = 0;
};

Stats stats(std::vector<double> v) {
  Stats s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.median = v[v.size() / 2];
  s.p90 = v[std::min(v.size() - 1, static_cast<std::size_t>(0.9 * static_cast<double>(v.size())))];
  s.max = v.back();
  for (double x : v) s.sum += x;
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  std::string agent;
  int count = 100;
  std::size_t concurrency = 8;
  long settle_ms = 2000;
  std::optional<Isolation> isolation;
  bool usage = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--agent" && i + 1 < argc) agent = argv[++i];
    else if (a == "--terminals" && i + 1 < argc) count = std::atoi(argv[++i]);
    else if (a == "--concurrency" && i + 1 < argc) concurrency = static_cast<std::size_t>(std::atoi(argv[++i]));
    else if (a == "--settle-ms" && i + 1 < argc) settle_ms = std::atol(argv[++i]);
    else if (a == "--isolation" && i + 1 < argc) {
      auto iso = parse_isolation(argv[++i]);
      if (!iso) {
        std::fprintf(stderr, "%s\n", iso.error().message.c_str());
        return 2;
      }
      isolation = *iso;
    } else {
      usage = true;
    }
  }
  if (usage || count <= 0 || concurrency == 0) {
    std::fprintf(stderr,
                 "usage: %s --agent PATH [--terminals N] [--isolation none|user|sandbox]\n"
                 "          [--concurrency C] [--settle-ms MS]\n",
                 argv[0]);
    return 2;
  }
  // Each terminal costs this process a ready pipe while it starts and a connection for its
  // request: 500 of them need more than a default soft limit of 1024 may leave.
  struct rlimit nofile {};
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    (void)setrlimit(RLIMIT_NOFILE, &nofile);
  }

  char tmpl[] = "/tmp/terminals-density-XXXXXX";
  if (!mkdtemp(tmpl)) return 1;
  std::string scratch = tmpl;
  chmod(tmpl, 0711);
  std::string data_dir = scratch + "/data";

  auto loop = Loop::create().value();
  LocalBackendOptions options;
  options.data_dir = data_dir;
  options.agent_path = agent;
  options.default_isolation = isolation;
  options.start_timeout = std::chrono::seconds(60);  // 500 starting at 8 a time on 2 busy cores
  auto local = LocalBackend::create(*loop, options);
  if (!local) {
    std::fprintf(stderr, "local backend: %s\n", local.error().message.c_str());
    return 1;
  }
  std::string iso_name = isolation_name((*local)->default_isolation());
  std::unique_ptr<Backend> backend = std::move(*local);
  std::string run_id;
  {
    std::random_device rd;
    char buf[17];
    std::snprintf(buf, sizeof buf, "%08x%08x", rd(), rd());
    run_id = buf;
  }

  long avail_before = mem_available_kb();
  KernelMem kernel_before = kernel_mem();
  std::vector<std::string> names;
  std::vector<double> provision_ms;
  int failures = 0;
  int next = 0, finished = 0;
  std::size_t in_flight = 0;
  auto t_start = Clock::now();
  std::function<void()> start_more = [&] {
    while (in_flight < concurrency && next < count) {
      TerminalSpec spec;
      spec.user_id = "density-" + run_id + "-" + std::to_string(next++);
      ++in_flight;
      auto t0 = Clock::now();
      backend->provision(spec, [&, t0](Result<TerminalInfo> r) {
        --in_flight;
        ++finished;
        if (r) {
          names.push_back(r->name);
          provision_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
        } else {
          ++failures;
          std::fprintf(stderr, "provision: %s\n", r.error().message.c_str());
        }
        start_more();
      });
    }
  };
  start_more();
  bool all = run_until(*loop, [&] { return finished == count; }, std::chrono::seconds(30 + count));
  double provision_s = std::chrono::duration<double>(Clock::now() - t_start).count();
  if (!all) std::fprintf(stderr, "provisioning did not finish in time\n");

  // One request each, so that every agent has served its user once before it sits idle.
  int answered = 0, asked = 0, replied = 0;
  {
    auto client = HttpClient::create(*loop);
    for (const auto& name : names) {
      std::optional<Result<TerminalInfo>> info;
      backend->inspect(name, [&](Result<TerminalInfo> r) { info.emplace(std::move(r)); });
      run_until(*loop, [&] { return info.has_value(); }, std::chrono::seconds(10));
      if (!info || !*info) continue;
      RequestHead head;
      head.method = "GET";
      head.target = "/files/cwd";
      head.headers.add("Authorization", "Bearer " + (*info)->api_key);
      ++asked;
      client->fetch((*info)->endpoint, std::move(head), "", [&](Result<FetchResponse> r) {
        ++replied;
        if (r && r->head.status == 200) ++answered;
        else ++failures;
      });
      // One at a time: this is a check, not a load test.
      run_until(*loop, [&] { return replied == asked; }, std::chrono::seconds(10));
    }
    if (replied != asked) ++failures;
  }  // the client and its pooled connections go: idle agents have no open connection
  run_until(*loop, [] { return false; }, std::chrono::seconds(0));
  struct timespec settle {settle_ms / 1000, (settle_ms % 1000) * 1000000};
  nanosleep(&settle, nullptr);

  long avail_after = mem_available_kb();
  KernelMem kernel_after = kernel_mem();
  auto all_procs = processes();
  std::vector<double> agent_rss, agent_pss, agent_uss, tree_rss, tree_pss, tree_procs;
  int missing = 0;
  for (const auto& name : names) {
    pid_t root = record_pid(data_dir, name);
    if (root <= 0 || !all_procs.count(root)) {
      ++missing;
      continue;
    }
    double trss = 0, tpss = 0;
    auto pids = tree(all_procs, root);
    for (pid_t pid : pids) {
      std::string base = "/proc/" + std::to_string(pid);
      long rss = proc_kb(base + "/status", "VmRSS");
      long pss = proc_kb(base + "/smaps_rollup", "Pss");
      if (rss < 0 || pss < 0) continue;
      trss += static_cast<double>(rss);
      tpss += static_cast<double>(pss);
      if (all_procs[pid].comm == "terminals-agent") {
        agent_rss.push_back(static_cast<double>(rss));
        agent_pss.push_back(static_cast<double>(pss));
        agent_uss.push_back(static_cast<double>(proc_kb(base + "/smaps_rollup", "Private_Clean") +
                                                proc_kb(base + "/smaps_rollup", "Private_Dirty")));
      }
    }
    tree_rss.push_back(trss);
    tree_pss.push_back(tpss);
    tree_procs.push_back(static_cast<double>(pids.size()));
  }

  // Removed as they were provisioned, `concurrency` at a time.
  auto t_remove = Clock::now();
  std::size_t removing = 0, removed = 0, next_remove = 0;
  std::function<void()> remove_more = [&] {
    while (removing < concurrency && next_remove < names.size()) {
      const std::string& name = names[next_remove++];
      ++removing;
      backend->remove(name, true, [&, name](Status st) {
        if (!st) std::fprintf(stderr, "remove %s: %s\n", name.c_str(), st.error().message.c_str());
        --removing;
        ++removed;
        remove_more();
      });
    }
  };
  remove_more();
  run_until(*loop, [&] { return removed == names.size(); }, std::chrono::seconds(60 + 2 * count));
  double remove_s = std::chrono::duration<double>(Clock::now() - t_remove).count();
  backend.reset();
  std::string cleanup = "rm -rf " + scratch;
  (void)std::system(cleanup.c_str());
  struct timespec settle2 {1, 0};
  nanosleep(&settle2, nullptr);
  long avail_end = mem_available_kb();

  auto pm = stats(provision_ms);
  auto ar = stats(agent_rss), ap = stats(agent_pss), au = stats(agent_uss);
  auto tr = stats(tree_rss), tp = stats(tree_pss), tn = stats(tree_procs);
  std::printf("density terminals=%zu isolation=%s concurrency=%zu failures=%d answered=%d unmeasured=%d\n",
              names.size(), iso_name.c_str(), concurrency, failures, answered, missing);
  std::printf("provision total_s=%.2f per_terminal_ms=%.1f median_ms=%.1f p90_ms=%.1f max_ms=%.1f\n",
              provision_s, names.empty() ? 0.0 : provision_s * 1000 / static_cast<double>(names.size()),
              pm.median, pm.p90, pm.max);
  std::printf("agent_rss_kb median=%.0f max=%.0f\n", ar.median, ar.max);
  std::printf("agent_pss_kb median=%.0f max=%.0f sum=%.0f\n", ap.median, ap.max, ap.sum);
  std::printf("agent_uss_kb median=%.0f max=%.0f\n", au.median, au.max);
  std::printf("terminal_rss_kb median=%.0f max=%.0f processes=%.0f\n", tr.median, tr.max, tn.median);
  std::printf("terminal_pss_kb median=%.0f max=%.0f sum=%.0f\n", tp.median, tp.max, tp.sum);
  long used = avail_before - avail_after;
  std::printf("host_mem before_kb=%ld after_kb=%ld used_kb=%ld per_terminal_kb=%.0f after_remove_kb=%ld\n",
              avail_before, avail_after, used,
              names.empty() ? 0.0 : static_cast<double>(used) / static_cast<double>(names.size()), avail_end);
  std::printf("kernel_mem slab_kb=%ld page_tables_kb=%ld kernel_stack_kb=%ld shmem_kb=%ld\n",
              kernel_after.slab - kernel_before.slab, kernel_after.page_tables - kernel_before.page_tables,
              kernel_after.kernel_stack - kernel_before.kernel_stack, kernel_after.shmem - kernel_before.shmem);
  std::printf("remove total_s=%.2f\n", remove_s);
  return failures == 0 && missing == 0 && static_cast<int>(names.size()) == count ? 0 : 1;
}
