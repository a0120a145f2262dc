// LocalBackend: one terminals-agent per terminal on this host (see local_backend.hpp for the
// layout and isolation levels). Blocking steps (accounts, directories, cgroups, fork) run on
// the thread pool; readiness, exits and stops are watched on the loop.

#include "terminals/local_backend.hpp"

#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <type_traits>
#include <dirent.h>
#include <fstream>
#include <map>
#include <deque>
#include <memory>
#include <sstream>
#include <utility>
#include <vector>

#include "agent/pty.hpp"
#include "json/json.hpp"
#include "local/cgroup.hpp"
#include "local/launcher.hpp"
#include "local/os_user.hpp"
#include "local/seccomp.hpp"
#include "terminals/http_client.hpp"
#include "terminals/log.hpp"
#include "terminals/loop.hpp"
#include "util/crypto.hpp"
#include "util/files.hpp"
#include "uv/handle.hpp"
#include "uv/work.hpp"

namespace terminals {

const char* isolation_name(Isolation isolation) noexcept {
  switch (isolation) {
    case Isolation::None: return "none";
    case Isolation::User: return "user";
    case Isolation::Sandbox: return "sandbox";
  }
  return "none";
}

Result<Isolation> parse_isolation(std::string_view text) {
  if (text == "none") return Isolation::None;
  if (text == "user") return Isolation::User;
  if (text == "sandbox") return Isolation::Sandbox;
  return Error(Errc::InvalidArgument,
               "unknown isolation '" + std::string(text) + "' (expected none, user or sandbox)");
}

const char* terminal_state_name(TerminalState state) noexcept {
  switch (state) {
    case TerminalState::Provisioning: return "provisioning";
    case TerminalState::Running: return "running";
    case TerminalState::Stopping: return "stopping";
    case TerminalState::Stopped: return "stopped";
    case TerminalState::Error: return "error";
  }
  return "error";
}

namespace detail {

namespace {

constexpr std::string_view kSandboxHome = "/home/user";
constexpr std::string_view kSandboxRun = "/run/terminal";
constexpr std::string_view kSandboxAgent = "/run/terminals-agent";
// bubblewrap reads the sandbox's system call filter here (the agent's readiness pipe is 3).
constexpr int kSeccompFd = 4;
constexpr const char* kSeccompFdText = "4";

std::string length_prefixed(std::string_view s) { return std::to_string(s.size()) + ":" + std::string(s); }

// Field 22 of /proc/<pid>/stat (start time) distinguishes our agent from a later process with
// its pid; field 3 (state) tells a zombie, which is dead for our purposes.
struct ProcStat {
  char state = '?';
  unsigned long long start_time = 0;
};

std::optional<ProcStat> proc_stat(pid_t pid) {
  std::string stat = read_text("/proc/" + std::to_string(pid) + "/stat", 4096);
  auto close = stat.rfind(')');
  if (close == std::string::npos || close + 2 >= stat.size()) return std::nullopt;
  std::istringstream in(stat.substr(close + 2));
  ProcStat ps;
  std::string field;
  in >> ps.state;
  for (int i = 4; i <= 22; ++i) {
    if (!(in >> field)) return std::nullopt;
  }
  ps.start_time = std::strtoull(field.c_str(), nullptr, 10);
  return ps;
}

unsigned long long process_start_time(pid_t pid) {
  auto ps = proc_stat(pid);
  return ps ? ps->start_time : 0;
}

bool process_alive(pid_t pid, unsigned long long start_time) {
  if (pid <= 0) return false;
  auto ps = proc_stat(pid);
  if (!ps) return false;
  if (ps->state == 'Z' || ps->state == 'X') {
    // An agent we released (adopted by a later backend in this same process) ends up as our
    // zombie: collect it. For anyone else's zombie this fails harmlessly with ECHILD.
    ::waitpid(pid, nullptr, WNOHANG);
    return false;
  }
  return start_time == 0 || ps->start_time == start_time;
}

std::string mib(std::uint64_t bytes) { return std::to_string(bytes >> 20) + " MiB"; }

std::int64_t to_unix_seconds(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

// What the orchestrator keeps of a terminal on disk (data/terminals/<name>.json).
struct Record {
  std::string name, user_id, policy_id, context_id;
  Isolation isolation = Isolation::None;
  std::string os_user;  // empty with isolation none
  pid_t pid = 0;
  unsigned long long start_time = 0;
  std::int64_t created_at = 0;
  std::optional<std::uint64_t> memory_limit;

  std::string to_json() const {
    JsonWriter w;
    w.object().field("name", name).field("user_id", user_id).field("policy_id", policy_id)
        .field("context_id", context_id).field("isolation", isolation_name(isolation))
        .field("os_user", os_user).field("pid", static_cast<std::int64_t>(pid))
        .field("start_time", static_cast<std::uint64_t>(start_time)).field("created_at", created_at);
    if (memory_limit) w.field("memory_limit", *memory_limit);
    return w.end_object().take();
  }
  static std::optional<Record> from_json(std::string_view text) {
    auto doc = parse_json(text);
    if (!doc || !doc->IsObject()) return std::nullopt;
    Record r;
    auto str = [&](const char* k) { return std::string(json_string(*doc, k).value_or("")); };
    r.name = str("name");
    r.user_id = str("user_id");
    r.policy_id = str("policy_id");
    r.context_id = str("context_id");
    auto iso = parse_isolation(str("isolation"));
    if (!iso || r.name.empty()) return std::nullopt;
    r.isolation = *iso;
    r.os_user = str("os_user");
    r.pid = static_cast<pid_t>(json_int(*doc, "pid").value_or(0));
    r.start_time = static_cast<unsigned long long>(json_int(*doc, "start_time").value_or(0));
    r.created_at = json_int(*doc, "created_at").value_or(0);
    if (auto m = json_int(*doc, "memory_limit")) r.memory_limit = static_cast<std::uint64_t>(*m);
    return r;
  }
};

// Everything the blocking preparation step produces for the loop.
struct Prepared {
  Record record;
  std::string key;
  std::string run_dir;
  int ready_fd = -1;
  std::string log_path;
};

Result<std::vector<Record>> read_records(const std::string& dir) {
  std::vector<Record> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) {
    if (errno == ENOENT) return out;
    return Error(Errc::Io, "cannot read " + dir + ": " + std::strerror(errno));
  }
  while (struct dirent* e = ::readdir(d)) {
    std::string file = e->d_name;
    if (file.size() < 6 || file.compare(file.size() - 5, 5, ".json") != 0) continue;
    if (auto r = Record::from_json(read_text(dir + "/" + file))) out.push_back(std::move(*r));
  }
  ::closedir(d);
  return out;
}

// What the blocking steps (run on libuv's pool) read, shared with them instead of the backend:
// a backend destroyed while one runs leaves the job a live copy, not a dangling `this`.
struct Setup {
  LocalBackendOptions options;
  CgroupMounts cgroups;
  std::string cgroup_root;  ///< see cgroup_root_for
  std::string agent_path;
  bool bwrap_disable_userns = false;  ///< bubblewrap 0.8+: no user namespaces inside the sandbox
  std::string seccomp_program;        ///< the sandbox's system call filter (local/seccomp.hpp)

  std::string home_of(std::string_view user_id, std::string_view context_id) const {
    std::string home = options.data_dir + "/homes/" + user_hash(user_id);
    if (!context_id.empty() && context_id != "default") {
      home += "/contexts/" + sha256_hex("terminals-context:" + std::string(context_id)).substr(0, 24);
    }
    return home;
  }

  // Blocking: account, directories, key, cgroup, fork/exec. Runs on the thread pool.
  Result<Prepared> prepare(const TerminalSpec& spec, const std::string& name, Isolation isolation) const {
    Prepared p;
    Record& r = p.record;
    r.name = name;
    r.user_id = spec.user_id;
    r.policy_id = spec.policy_id;
    r.context_id = spec.context_id;
    r.isolation = isolation;
    r.created_at = to_unix_seconds(std::chrono::system_clock::now());

    std::string user_root = options.data_dir + "/homes/" + user_hash(spec.user_id);
    std::string home = home_of(spec.user_id, spec.context_id);
    p.run_dir = options.data_dir + "/run/" + name;
    std::optional<uid_t> uid;
    gid_t gid = 0;
    if (isolation != Isolation::None) {
      r.os_user = os_user_name(spec.user_id);
      auto account = ensure_os_user(r.os_user, user_root);
      if (!account) return std::move(account).error();
      uid = account->uid;
      gid = account->gid;
    }
    if (auto s = make_private_dir(user_root, 0700, uid, gid); !s) return std::move(s).error();
    if (home != user_root) {
      if (auto s = make_private_dir(home, 0700, uid, gid); !s) return std::move(s).error();
    }
    // A fresh runtime directory each start: no stale socket, no key of a previous run.
    if (auto s = remove_tree(p.run_dir); !s) return std::move(s).error();
    if (auto s = make_private_dir(p.run_dir, 0700, uid, gid); !s) return std::move(s).error();
    auto key = random_token(32);
    if (!key) return std::move(key).error();
    p.key = *key;
    if (auto s = write_private_file(p.run_dir + "/key", p.key, uid, gid); !s) return std::move(s).error();
    p.log_path = p.run_dir + "/agent.log";
    if (auto s = write_private_file(p.log_path, "", uid, gid); !s) return std::move(s).error();

    std::vector<std::string> procs;
    if (::geteuid() == 0 && cgroups.any()) {
      auto group = TerminalCgroup::create(cgroups, cgroup_root, name, spec.limits);
      if (!group) return std::move(group).error();
      if (group->pids().size() > 0) group->kill_all(SIGKILL);  // leftovers of a crashed run
      procs = group->procs_files();
      r.memory_limit = group->memory_limit();
    } else if (spec.limits.memory_bytes || spec.limits.pids || spec.limits.cpus) {
      return Error(Errc::PolicyDenied,
                   "the policy sets resource limits, which need cgroups and root; run the "
                   "orchestrator as root or remove the limits");
    }

    LaunchSpec launch_spec;
    bool sandbox = isolation == Isolation::Sandbox;
    std::string agent_home = sandbox ? std::string(kSandboxHome) : home;
    std::string agent_run = sandbox ? std::string(kSandboxRun) : p.run_dir;
    std::vector<std::string> agent_args = {
        sandbox ? std::string(kSandboxAgent) : agent_path, "--listen",
        "unix:" + agent_run + "/agent.sock", "--home", agent_home, "--ready-fd", "3"};
    if (sandbox) {
      launch_spec.argv = {options.bwrap_path, "--unshare-all"};
      // A user namespace of one's own hands the kernel's namespace code to a tenant as "root"
      // there (a common way into kernel bugs); nothing a terminal does needs one.
      if (bwrap_disable_userns) {
        for (const char* a : {"--unshare-user", "--disable-userns"}) launch_spec.argv.emplace_back(a);
      }
      if (!seccomp_program.empty()) {
        launch_spec.data_fds.emplace_back(kSeccompFd, seccomp_program);
        for (const char* a : {"--seccomp", kSeccompFdText}) launch_spec.argv.emplace_back(a);
      }
      if (spec.network == NetworkMode::Host) launch_spec.argv.push_back("--share-net");
      for (const char* a : {"--new-session", "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin",
                            "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
                            "--symlink", "usr/sbin", "/sbin", "--ro-bind", "/etc", "/etc", "--proc",
                            "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/run",
                            "--tmpfs", "/home", "--hostname", "terminal"}) {
        launch_spec.argv.emplace_back(a);
      }
      for (const std::string& a :
           {std::string("--bind"), home, std::string(kSandboxHome), std::string("--bind"), p.run_dir,
            std::string(kSandboxRun), std::string("--ro-bind"), agent_path, std::string(kSandboxAgent),
            std::string("--chdir"), std::string(kSandboxHome), std::string("--")}) {
        launch_spec.argv.push_back(a);
      }
      for (auto& a : agent_args) launch_spec.argv.push_back(a);
    } else {
      launch_spec.argv = agent_args;
    }
    std::string shell = ::access("/bin/bash", X_OK) == 0 ? "/bin/bash" : "/bin/sh";
    launch_spec.env = {"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME=" + agent_home,
                       "SHELL=" + shell, "LANG=C.UTF-8", "TERM=xterm-256color",
                       "OPEN_TERMINAL_API_KEY_FILE=" + agent_run + "/key"};
    if (!r.os_user.empty()) {
      launch_spec.env.push_back("USER=" + r.os_user);
      launch_spec.env.push_back("LOGNAME=" + r.os_user);
    }
    for (const auto& [k, v] : spec.env) {
      if (is_secret_env_name(k) || k.empty() || k.find('=') != std::string::npos) {
        return Error(Errc::PolicyDenied, "the policy's environment may not set '" + k + "'");
      }
      launch_spec.env.push_back(k + "=" + v);
    }
    launch_spec.cwd = home;
    launch_spec.uid = uid;
    launch_spec.gid = gid;
    launch_spec.cgroup_procs = procs;
    launch_spec.open_files = spec.limits.open_files;
    launch_spec.log_path = p.log_path;
    auto launched = launch(launch_spec);
    if (!launched) return std::move(launched).error();
    r.pid = launched->pid;
    r.start_time = process_start_time(r.pid);
    p.ready_fd = launched->ready_read_fd;
    std::string records = options.data_dir + "/terminals";
    if (auto s = write_private_file(records + "/" + name + ".json", r.to_json(), std::nullopt, 0); !s) {
      ::kill(-r.pid, SIGKILL);
      ::close(p.ready_fd);
      return std::move(s).error();
    }
    return p;
  }

  // Blocking: deletes what remove() leaves behind.
  Status forget(const Record& r, bool delete_data) const {
    ::unlink((options.data_dir + "/terminals/" + r.name + ".json").c_str());
    if (auto s = remove_tree(options.data_dir + "/run/" + r.name); !s) return s;
    if (!delete_data) return {};
    if (auto s = remove_tree(home_of(r.user_id, r.context_id)); !s) return s;
    if (r.os_user.empty()) return {};
    // The account goes when no other terminal of this user remains.
    auto records = read_records(options.data_dir + "/terminals");
    if (records) {
      for (const auto& other : *records) {
        if (other.os_user == r.os_user) return {};
      }
    }
    if (r.context_id.empty() || r.context_id == "default") {
      if (auto s = remove_tree(options.data_dir + "/homes/" + user_hash(r.user_id)); !s) return s;
    }
    return remove_os_user(r.os_user);
  }
};

class LocalBackendImpl final : public LocalBackend {
 public:
  LocalBackendImpl(Loop& loop, std::shared_ptr<const Setup> setup, Isolation default_isolation,
                   std::shared_ptr<ChildReaper> reaper)
      : loop_(loop),
        setup_(std::move(setup)),
        default_isolation_(default_isolation),
        reaper_(std::move(reaper)),
        alive_(std::make_shared<bool>(true)),
        client_(HttpClient::create(loop)) {}

  ~LocalBackendImpl() override {
    *alive_ = false;
    // Our per-data-directory cgroup roots go when empty (rmdir refuses otherwise, which is
    // what we want while terminals run on).
    const CgroupMounts& mounts = setup_->cgroups;
    for (const std::string* mount : {&mounts.memory, &mounts.pids, &mounts.cpu, &mounts.unified}) {
      if (!mount->empty()) ::rmdir((*mount + "/" + setup_->cgroup_root).c_str());
    }
    // Terminals keep running, to be adopted by the next orchestrator: the reaper must not kill
    // them when it goes.
    for (auto& [name, t] : terminals_) {
      if (t->pid > 0 && reaper_->watching(t->pid)) reaper_->release(t->pid);
      close_ready(*t);
      auto waiters = std::move(t->waiters);
      auto stop_waiters = std::move(t->stop_waiters);
      if (!waiters.empty() || !stop_waiters.empty()) {
        loop_.defer([w = std::move(waiters), s = std::move(stop_waiters)]() mutable {
          for (auto& cb : w) cb(Error(Errc::Cancelled, "the local backend was destroyed"));
          for (auto& cb : s) cb(Error(Errc::Cancelled, "the local backend was destroyed"));
        });
      }
    }
    // Removals not started: their terminals are stopped and their records stay, so the next
    // backend adopts them as stopped.
    for (auto& removal : removals_) {
      loop_.defer([d = std::move(removal.second)]() mutable {
        d(Error(Errc::Cancelled, "the local backend was destroyed before the removal ran"));
      });
    }
  }

  std::string_view kind() const override { return "local"; }
  Isolation default_isolation() const override { return default_isolation_; }

  std::string terminal_name(std::string_view user_id, std::string_view policy_id,
                            std::string_view context_id) const override {
    return "t" + sha256_hex("terminals-terminal:" + length_prefixed(user_id) +
                            length_prefixed(policy_id) + length_prefixed(context_id))
                     .substr(0, 24);
  }

  void provision(const TerminalSpec& spec, Callback<TerminalInfo> done) override {
    std::string name = terminal_name(spec.user_id, spec.policy_id, spec.context_id);
    Isolation isolation = spec.isolation.value_or(default_isolation_);
    if (auto ok = check_isolation(isolation); !ok) return later(std::move(done), std::move(ok).error());
    if (!spec.egress_allow.empty()) {
      return later(std::move(done), Error(Errc::PolicyDenied, "network: the local backend cannot enforce an egress "
                                                              "allow-list; use network none or host"));
    }
    auto& slot = terminals_[name];
    if (!slot) {
      slot = std::make_unique<Terminal>();
      slot->name = name;
    }
    Terminal& t = *slot;
    switch (t.state) {
      case TerminalState::Provisioning:
        t.waiters.push_back(std::move(done));  // single flight: one start, every caller answered
        return;
      case TerminalState::Running:
        if (process_alive(t.pid, t.start_time)) return later(std::move(done), info(t));
        break;  // died without us noticing (adopted, not our child): start again
      case TerminalState::Stopping:
        return later(std::move(done), Error(Errc::BackendUnavailable,
                                            "terminal " + name + " is stopping; retry shortly"));
      case TerminalState::Stopped:
      case TerminalState::Error:
        break;
    }
    t.user_id = spec.user_id;
    t.policy_id = spec.policy_id;
    t.context_id = spec.context_id;
    t.isolation = isolation;
    t.state = TerminalState::Provisioning;
    t.reason.clear();
    t.waiters.push_back(std::move(done));
    t.generation++;
    if (isolation == Isolation::None) {
      log(LogLevel::Warning, "local",
          "terminal " + name + " runs with isolation 'none': its commands run as this process's "
          "user with nothing separating them from the host or other users (development only)");
    }

    std::weak_ptr<bool> alive = alive_;
    std::uint64_t generation = t.generation;
    run_blocking<Prepared>(
        loop_, [setup = setup_, spec, name, isolation]() { return setup->prepare(spec, name, isolation); },
        [this, alive, name, generation](Result<Prepared> prepared) {
          auto token = alive.lock();
          if (!token || !*token) {
            if (prepared) ::close(prepared->ready_fd);
            return;
          }
          started(name, generation, std::move(prepared));
        });
  }

  void inspect(std::string_view name, Callback<TerminalInfo> done) override {
    auto it = terminals_.find(name);
    if (it == terminals_.end()) {
      return later(std::move(done), Error(Errc::NotFound, "no terminal " + std::string(name)));
    }
    Terminal& t = *it->second;
    if (t.state == TerminalState::Running && !process_alive(t.pid, t.start_time)) {
      t.state = TerminalState::Stopped;
      t.reason = "the agent exited";
    }
    later(std::move(done), info(t));
  }

  void stop(std::string_view name, Callback<void> done) override {
    auto it = terminals_.find(name);
    if (it == terminals_.end()) {
      return later_status(std::move(done), Error(Errc::NotFound, "no terminal " + std::string(name)));
    }
    begin_stop(*it->second, std::move(done));
  }

  void remove(std::string_view name, bool delete_data, Callback<void> done) override {
    auto it = terminals_.find(name);
    if (it == terminals_.end()) {
      return later_status(std::move(done), Error(Errc::NotFound, "no terminal " + std::string(name)));
    }
    std::string key(name);
    std::weak_ptr<bool> alive = alive_;
    begin_stop(*it->second, [this, alive, key, delete_data, done = std::move(done)](Status stopped) mutable {
      auto token = alive.lock();
      if (!token || !*token) return done(Error(Errc::Cancelled, "the local backend was destroyed"));
      if (!stopped) return done(std::move(stopped));
      auto found = terminals_.find(key);
      if (found == terminals_.end()) return done(Status{});
      Record record = record_of(*found->second);
      terminals_.erase(found);
      auto work = [setup = setup_, record, delete_data]() { return setup->forget(record, delete_data); };
      removals_.emplace_back(std::move(work), std::move(done));
      next_removal();
    });
  }

  void list(Callback<std::vector<TerminalInfo>> done) override {
    std::weak_ptr<bool> alive = alive_;
    run_blocking<std::vector<Record>>(
        loop_, [dir = setup_->options.data_dir + "/terminals"]() { return read_records(dir); },
        [this, alive, done = std::move(done)](Result<std::vector<Record>> records) mutable {
          auto token = alive.lock();
          if (!token || !*token) return done(Error(Errc::Cancelled, "the local backend was destroyed"));
          if (!records) return done(std::move(records).error());
          adopt(std::move(*records), std::move(done));
        });
  }

 private:
  struct Terminal {
    std::string name, user_id, policy_id, context_id;
    Isolation isolation = Isolation::None;
    std::string os_user;
    TerminalState state = TerminalState::Stopped;
    std::string reason;
    std::string key;
    std::string run_dir;
    std::string log_path;
    pid_t pid = 0;
    unsigned long long start_time = 0;
    bool our_child = false;
    std::chrono::system_clock::time_point created_at{};
    std::optional<std::uint64_t> memory_limit;
    std::uint64_t generation = 0;
    std::vector<Callback<TerminalInfo>> waiters;
    std::vector<Callback<void>> stop_waiters;
    int ready_fd = -1;
    std::string ready_buffer;
    std::unique_ptr<UvHandle<uv_poll_t>> ready_poll;
    std::unique_ptr<Timer> timer;  // start timeout, or the stop poll
    std::chrono::steady_clock::time_point stop_started{};
    bool stop_killed = false;
    MoveOnlyFunction<void()> on_ready_readable;
  };

  std::deque<std::pair<MoveOnlyFunction<Status()>, Callback<void>>> removals_;
  bool removing_ = false;

 public:
  Status check_isolation(Isolation isolation) const {
    if (isolation != Isolation::None && ::geteuid() != 0) {
      return Error(Errc::PolicyDenied, std::string("isolation '") + isolation_name(isolation) +
                                           "' needs the orchestrator to run as root");
    }
    if (isolation == Isolation::Sandbox && ::access(setup_->options.bwrap_path.c_str(), X_OK) != 0) {
      return Error(Errc::PolicyDenied, "isolation 'sandbox' needs bubblewrap at " + setup_->options.bwrap_path +
                                           " (apt-get install bubblewrap)");
    }
    return {};
  }

 private:
  template <class T>
  void later(Callback<T> done, std::type_identity_t<Result<T>> result) {
    loop_.defer([d = std::move(done), r = std::move(result)]() mutable { d(std::move(r)); });
  }
  void later_status(Callback<void> done, Status status) {
    loop_.defer([d = std::move(done), s = std::move(status)]() mutable { d(std::move(s)); });
  }
  // Removals run one at a time: they serialise on the accounts lock (userdel) anyway, and each
  // one queued on libuv's 4-thread pool ahead of a provision delays it (bench/run users: a new
  // user waited 16.5 s behind a reset of 62 terminals).
  void next_removal() {
    if (removing_ || removals_.empty()) return;
    removing_ = true;
    auto [work, done] = std::move(removals_.front());
    removals_.pop_front();
    std::weak_ptr<bool> alive = alive_;
    queue_blocking_status(std::move(work), [this, alive, done = std::move(done)](Status s) mutable {
      done(std::move(s));
      auto token = alive.lock();
      if (!token || !*token) return;
      removing_ = false;
      next_removal();
    });
  }

  void queue_blocking_status(MoveOnlyFunction<Status()> work, Callback<void> done) {
    auto slot = std::make_shared<Status>();
    queue_blocking(
        loop_, [slot, w = std::move(work)]() mutable { *slot = w(); },
        [slot, d = std::move(done)]() mutable { d(std::move(*slot)); });
  }

  TerminalInfo info(const Terminal& t) const {
    TerminalInfo i;
    i.name = t.name;
    i.user_id = t.user_id;
    i.policy_id = t.policy_id;
    i.context_id = t.context_id;
    i.state = t.state;
    i.reason = t.reason;
    i.endpoint = Endpoint::unix_socket(t.run_dir + "/agent.sock");
    i.api_key = t.key;
    i.created_at = t.created_at;
    if (t.state == TerminalState::Running && i.reason.empty()) {
      auto group = TerminalCgroup::open(setup_->cgroups, setup_->cgroup_root, t.name);
      if (std::uint64_t kills = group.oom_kills(); kills > 0) {
        i.reason = "a process was killed: out of memory (limit " +
                   (group.memory_limit() ? mib(*group.memory_limit()) : std::string("unknown")) +
                   (kills > 1 ? ", " + std::to_string(kills) + " times" : "") + ")";
      }
    }
    return i;
  }

  Record record_of(const Terminal& t) const {
    Record r;
    r.name = t.name;
    r.user_id = t.user_id;
    r.policy_id = t.policy_id;
    r.context_id = t.context_id;
    r.isolation = t.isolation;
    r.os_user = t.os_user;
    r.pid = t.pid;
    r.start_time = t.start_time;
    r.created_at = to_unix_seconds(t.created_at);
    r.memory_limit = t.memory_limit;
    return r;
  }

  // Back on the loop after prepare().
  void started(const std::string& name, std::uint64_t generation, Result<Prepared> prepared) {
    auto it = terminals_.find(name);
    Terminal* t = it == terminals_.end() ? nullptr : it->second.get();
    if (!t || t->generation != generation) {
      if (prepared) ::close(prepared->ready_fd);
      return;
    }
    if (!prepared) {
      fail(*t, std::move(prepared).error());
      return;
    }
    Record& r = prepared->record;
    t->os_user = r.os_user;
    t->pid = r.pid;
    t->start_time = r.start_time;
    t->our_child = true;
    t->key = std::move(prepared->key);
    t->run_dir = prepared->run_dir;
    t->log_path = prepared->log_path;
    t->created_at = std::chrono::system_clock::time_point(std::chrono::seconds(r.created_at));
    t->memory_limit = r.memory_limit;
    t->ready_fd = prepared->ready_fd;
    t->ready_buffer.clear();

    std::weak_ptr<bool> alive = alive_;
    reaper_->watch(t->pid, [this, alive, name, generation](std::optional<int> code) {
      auto token = alive.lock();
      if (!token || !*token) return;
      exited(name, generation, code);
    });

    t->ready_poll = std::make_unique<UvHandle<uv_poll_t>>();
    if (uv_poll_init(loop_.native(), t->ready_poll->get(), t->ready_fd) == 0) {
      t->ready_poll->set_initialized();
      t->ready_poll->get()->data = t;
      uv_poll_start(t->ready_poll->get(), UV_READABLE, [](uv_poll_t* h, int, int) {
        auto* term = static_cast<Terminal*>(h->data);
        if (term) term->on_ready_readable();
      });
    }
    t->on_ready_readable = [this, name, generation]() { ready_readable(name, generation); };
    t->timer = loop_.create_timer([this, name, generation]() {
      auto found = terminals_.find(name);
      if (found == terminals_.end() || found->second->generation != generation ||
          found->second->state != TerminalState::Provisioning) {
        return;
      }
      Terminal& term = *found->second;
      std::string log = tail_of(term.log_path, 400);
      fail(term, Error(Errc::Timeout, "the agent of terminal " + name + " was not ready within " +
                                          std::to_string(setup_->options.start_timeout.count()) + " ms" +
                                          (log.empty() ? "" : "; its log ends: " + log)));
    });
    t->timer->start(setup_->options.start_timeout);
  }

  void ready_readable(const std::string& name, std::uint64_t generation) {
    auto it = terminals_.find(name);
    if (it == terminals_.end() || it->second->generation != generation) return;
    Terminal& t = *it->second;
    char buf[64];
    for (;;) {
      ssize_t n = ::read(t.ready_fd, buf, sizeof buf);
      if (n > 0) {
        t.ready_buffer.append(buf, static_cast<std::size_t>(n));
        if (t.ready_buffer.find('\n') != std::string::npos) break;
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
      break;  // EOF: the agent closed its end without saying ready (it is exiting)
    }
    bool ready = t.ready_buffer.rfind("ready", 0) == 0;
    close_ready(t);
    if (t.state != TerminalState::Provisioning) return;
    if (!ready) {
      // exited() reports the reason once the process is reaped; stop waiting on the pipe.
      return;
    }
    loop_.defer_delete(std::move(t.timer));
    t.state = TerminalState::Running;
    t.reason.clear();
    auto waiters = std::move(t.waiters);
    TerminalInfo i = info(t);
    for (auto& w : waiters) w(i);
  }

  void exited(const std::string& name, std::uint64_t generation, std::optional<int> code) {
    auto it = terminals_.find(name);
    if (it == terminals_.end() || it->second->generation != generation) return;
    Terminal& t = *it->second;
    std::string how = !code ? "the agent exited" :
                      *code < 0 ? "the agent was killed by signal " + std::to_string(-*code)
                                : "the agent exited with status " + std::to_string(*code);
    auto group = TerminalCgroup::open(setup_->cgroups, setup_->cgroup_root, t.name);
    if (group.oom_kills() > 0) {
      how = "killed: out of memory (limit " +
            (group.memory_limit() ? mib(*group.memory_limit()) : std::string("unknown")) + ")";
    }
    if (t.state == TerminalState::Provisioning) {
      std::string log = tail_of(t.log_path, 400);
      fail(t, Error(Errc::BackendUnavailable,
                    "the agent of terminal " + name + " did not start: " + how +
                        (log.empty() ? "" : "; its log ends: " + log)));
      return;
    }
    if (t.state == TerminalState::Running) {
      t.state = code && *code == 0 ? TerminalState::Stopped : TerminalState::Error;
      t.reason = how;
      // The rest of its processes go with it.
      group.kill_all(SIGKILL);
    }
    // Stopping: the stop poll notices.
  }

  void fail(Terminal& t, Error error) {
    close_ready(t);
    loop_.defer_delete(std::move(t.timer));
    if (t.pid > 0) {
      ::kill(-t.pid, SIGKILL);
      TerminalCgroup::open(setup_->cgroups, setup_->cgroup_root, t.name).kill_all(SIGKILL);
    }
    t.state = TerminalState::Error;
    t.reason = error.message;
    auto waiters = std::move(t.waiters);
    for (auto& w : waiters) w(error);
  }

  void close_ready(Terminal& t) {
    if (t.ready_poll) {
      t.ready_poll->get()->data = nullptr;
      t.ready_poll.reset();
    }
    if (t.ready_fd >= 0) {
      ::close(t.ready_fd);
      t.ready_fd = -1;
    }
  }

  void begin_stop(Terminal& t, Callback<void> done) {
    if (t.state == TerminalState::Stopped || t.state == TerminalState::Error) {
      if (!process_alive(t.pid, t.start_time) &&
          TerminalCgroup::open(setup_->cgroups, setup_->cgroup_root, t.name).pids().empty()) {
        return later_status(std::move(done), Status{});
      }
    }
    t.stop_waiters.push_back(std::move(done));
    if (t.state == TerminalState::Stopping) return;
    if (t.state == TerminalState::Provisioning) {
      fail(t, Error(Errc::Cancelled, "terminal " + t.name + " was stopped while starting"));
    }
    t.state = TerminalState::Stopping;
    t.stop_started = std::chrono::steady_clock::now();
    t.stop_killed = false;
    signal_all(t, SIGTERM);
    std::string name = t.name;
    t.timer = loop_.create_timer([this, name]() { stop_tick(name); });
    t.timer->start(std::chrono::milliseconds(20), std::chrono::milliseconds(20));
  }

  void signal_all(Terminal& t, int sig) {
    auto group = TerminalCgroup::open(setup_->cgroups, setup_->cgroup_root, t.name);
    group.kill_all(sig);
    if (process_alive(t.pid, t.start_time)) ::kill(t.pid, sig);
  }

  void stop_tick(const std::string& name) {
    auto it = terminals_.find(name);
    if (it == terminals_.end()) return;
    Terminal& t = *it->second;
    auto group = TerminalCgroup::open(setup_->cgroups, setup_->cgroup_root, t.name);
    bool agent_gone = t.our_child ? !reaper_->watching(t.pid) : !process_alive(t.pid, t.start_time);
    if (agent_gone && group.pids().empty()) {
      loop_.defer_delete(std::move(t.timer));
      (void)group.remove();
      t.state = TerminalState::Stopped;
      if (t.reason.empty()) t.reason = "stopped";
      auto waiters = std::move(t.stop_waiters);
      for (auto& w : waiters) w(Status{});
      return;
    }
    if (!t.stop_killed && std::chrono::steady_clock::now() - t.stop_started >= setup_->options.stop_grace) {
      t.stop_killed = true;
      signal_all(t, SIGKILL);
    }
  }

  // list(): known terminals plus the records of earlier runs, checked and adopted.
  void adopt(std::vector<Record> records, Callback<std::vector<TerminalInfo>> done) {
    auto pending = std::make_shared<std::size_t>(1);
    auto finish = std::make_shared<MoveOnlyFunction<void()>>();
    std::weak_ptr<bool> alive = alive_;
    *finish = [this, alive, done = std::move(done)]() mutable {
      auto token = alive.lock();
      if (!token || !*token) return done(Error(Errc::Cancelled, "the local backend was destroyed"));
      std::vector<TerminalInfo> out;
      for (auto& [name, t] : terminals_) out.push_back(info(*t));
      done(std::move(out));
    };
    auto one_done = [pending, finish]() {
      if (--*pending == 0) (*finish)();
    };
    for (Record& r : records) {
      if (terminals_.count(r.name)) continue;
      auto t = std::make_unique<Terminal>();
      t->name = r.name;
      t->user_id = r.user_id;
      t->policy_id = r.policy_id;
      t->context_id = r.context_id;
      t->isolation = r.isolation;
      t->os_user = r.os_user;
      t->pid = r.pid;
      t->start_time = r.start_time;
      t->created_at = std::chrono::system_clock::time_point(std::chrono::seconds(r.created_at));
      t->memory_limit = r.memory_limit;
      t->run_dir = setup_->options.data_dir + "/run/" + r.name;
      t->log_path = t->run_dir + "/agent.log";
      t->key = read_text(t->run_dir + "/key", 4096);
      t->state = TerminalState::Stopped;
      Terminal& term = *t;
      terminals_[r.name] = std::move(t);
      if (!process_alive(term.pid, term.start_time) || term.key.empty()) {
        cleanup_dead(term);
        continue;
      }
      // Alive: adopt it only if its socket answers an authenticated request with its key.
      ++*pending;
      RequestHead head;
      head.method = "GET";
      head.target = "/files/cwd";
      head.headers.add("Authorization", "Bearer " + term.key);
      std::string name = term.name;
      client_->fetch(Endpoint::unix_socket(term.run_dir + "/agent.sock"), std::move(head), {},
                     [this, alive, name, one_done](Result<FetchResponse> got) {
                       auto token = alive.lock();
                       if (token && *token) {
                         auto found = terminals_.find(name);
                         if (found != terminals_.end()) {
                           Terminal& x = *found->second;
                           if (got && got->head.status == 200) {
                             x.state = TerminalState::Running;
                             x.reason.clear();
                           } else {
                             cleanup_dead(x);
                           }
                         }
                       }
                       one_done();
                     });
    }
    loop_.defer([one_done]() { one_done(); });
  }

  // A terminal from an earlier run whose agent is gone (or does not answer): its processes
  // and cgroup go, its data stays, and it is listed as stopped.
  void cleanup_dead(Terminal& t) {
    if (process_alive(t.pid, t.start_time)) ::kill(t.pid, SIGKILL);
    auto group = TerminalCgroup::open(setup_->cgroups, setup_->cgroup_root, t.name);
    group.kill_all(SIGKILL);
    (void)group.remove();  // may fail while the killed processes exit; retried on stop
    t.state = TerminalState::Stopped;
    t.reason = "its agent was not running after a restart";
  }

 private:
  Loop& loop_;
  std::shared_ptr<const Setup> setup_;
  Isolation default_isolation_;
  std::shared_ptr<ChildReaper> reaper_;
  std::shared_ptr<bool> alive_;
  std::unique_ptr<HttpClient> client_;
  std::map<std::string, std::unique_ptr<Terminal>, std::less<>> terminals_;
};

std::string find_agent_binary() {
  char self[4096];
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n > 0) {
    std::string path(self, static_cast<std::size_t>(n));
    path.resize(path.rfind('/') + 1);
    path += "terminals-agent";
    if (::access(path.c_str(), X_OK) == 0) return path;
  }
  if (const char* env_path = std::getenv("PATH")) {
    std::string_view rest = env_path;
    while (!rest.empty()) {
      auto colon = rest.find(':');
      std::string dir(rest.substr(0, colon));
      rest = colon == std::string_view::npos ? std::string_view() : rest.substr(colon + 1);
      if (dir.empty()) continue;
      std::string candidate = dir + "/terminals-agent";
      if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    }
  }
  return {};
}

}  // namespace

}  // namespace detail

Result<std::unique_ptr<LocalBackend>> LocalBackend::create(Loop& loop, LocalBackendOptions options) {
  using namespace detail;
  if (options.data_dir.empty() || options.data_dir.front() != '/') {
    return Error(Errc::InvalidArgument, "the local backend needs an absolute data directory");
  }
  while (options.data_dir.size() > 1 && options.data_dir.back() == '/') options.data_dir.pop_back();
  std::string agent = options.agent_path.empty() ? find_agent_binary() : options.agent_path;
  if (agent.empty() || ::access(agent.c_str(), X_OK) != 0) {
    return Error(Errc::InvalidArgument,
                 "cannot find the terminals-agent binary" +
                     (agent.empty() ? std::string(" next to this program or on PATH") : " at " + agent) +
                     "; build it (target terminals-agent) or set the agent path");
  }
  if (agent.front() != '/') {
    char cwd[4096];
    if (::getcwd(cwd, sizeof cwd)) agent = std::string(cwd) + "/" + agent;
  }
  bool root = ::geteuid() == 0;
  bool bwrap = ::access(options.bwrap_path.c_str(), X_OK) == 0;
  Isolation isolation = options.default_isolation.value_or(
      root ? (bwrap ? Isolation::Sandbox : Isolation::User) : Isolation::None);
  // Directories: the data dir is traversable (0711) so OS users reach their own 0700 homes
  // and runtime directories by path without being able to list anyone else's.
  for (const auto& [dir, mode] : std::vector<std::pair<std::string, mode_t>>{
           {options.data_dir, 0711}, {options.data_dir + "/homes", 0711},
           {options.data_dir + "/run", 0711}, {options.data_dir + "/terminals", 0700}}) {
    if (auto s = make_private_dir(dir, mode, std::nullopt, 0); !s) return std::move(s).error();
  }
  auto reaper = ChildReaper::create(loop);
  if (!reaper) return std::move(reaper).error();
  auto setup = std::make_shared<Setup>();
  setup->cgroups = CgroupMounts::detect();
  setup->cgroup_root = cgroup_root_for(options.data_dir, options.cgroup_name);
  setup->agent_path = agent;
  setup->seccomp_program = sandbox_seccomp_program();
  if (bwrap) {
    auto help = run_command_blocking({options.bwrap_path, "--help"});
    setup->bwrap_disable_userns = help && help->find("--disable-userns") != std::string::npos;
    if (!setup->bwrap_disable_userns) {
      log(LogLevel::Warning, "local",
          "bubblewrap at " + options.bwrap_path + " has no --disable-userns (0.8 or later): sandboxed "
          "users can create user namespaces of their own");
    }
  }
  setup->options = std::move(options);
  auto backend = std::make_unique<LocalBackendImpl>(loop, std::move(setup), isolation,
                                                    std::move(reaper).value());
  if (auto s = backend->check_isolation(isolation); !s) return std::move(s).error();
  return std::unique_ptr<LocalBackend>(std::move(backend));
}

}  // namespace terminals
