#include "agent/pty.hpp"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>
#include <utility>

#include "uv/uv_error.hpp"

extern char** environ;

namespace terminals::detail {

// ---------------------------------------------------------------------------------------------
// Environment, ids, times

bool is_secret_env_name(std::string_view name) {
  return name == "OPEN_TERMINAL_API_KEY" || name == "OPEN_TERMINAL_API_KEY_FILE" ||
         name.substr(0, 10) == "TERMINALS_";
}

Result<std::vector<std::string>> child_environment(
    const std::map<std::string, std::string>& overrides, std::string_view default_term) {
  for (const auto& [name, value] : overrides) {
    if (name.empty() || name.find('=') != std::string::npos ||
        name.find('\0') != std::string::npos || value.find('\0') != std::string::npos) {
      return Error(Errc::InvalidArgument,
                   "invalid environment variable name or value: \"" + name +
                       "\" (names must be non-empty without '=', and no NUL bytes)");
    }
    if (is_secret_env_name(name)) {
      return Error(Errc::PolicyDenied, "setting " + name +
                                           " is not allowed: the agent's credentials never "
                                           "reach child processes");
    }
  }
  // Ordered by name so that overrides replace inherited values.
  std::map<std::string, std::string> merged;
  for (char** e = environ; e && *e; ++e) {
    std::string_view entry(*e);
    auto eq = entry.find('=');
    if (eq == std::string_view::npos || eq == 0) continue;
    std::string_view name = entry.substr(0, eq);
    if (is_secret_env_name(name)) continue;
    merged.emplace(std::string(name), std::string(entry.substr(eq + 1)));
  }
  for (const auto& [name, value] : overrides) merged[name] = value;
  if (!default_term.empty() && merged.find("TERM") == merged.end()) {
    merged.emplace("TERM", std::string(default_term));
  }
  std::vector<std::string> out;
  out.reserve(merged.size());
  for (auto& [name, value] : merged) out.push_back(name + "=" + value);
  return out;
}

std::string utc_compact_timestamp() {
  time_t now = ::time(nullptr);
  struct tm tm {};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y%m%d-%H%M%S", &tm);
  return buf;
}

std::string utc_iso8601_now() {
  struct timespec ts {};
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm {};
  gmtime_r(&ts.tv_sec, &tm);
  char date[32];
  std::strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
  char micros[8];
  std::snprintf(micros, sizeof(micros), "%06u",
                static_cast<unsigned>(ts.tv_nsec / 1000) % 1000000u);
  return std::string(date) + "." + micros + "Z";
}

int exit_code_from_wait_status(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return -WTERMSIG(wait_status);
  return wait_status;  // not reachable without WUNTRACED/WCONTINUED
}

// ---------------------------------------------------------------------------------------------
// ChildReaper

Result<std::shared_ptr<ChildReaper>> ChildReaper::create(Loop& loop) {
  std::shared_ptr<ChildReaper> r(new ChildReaper(loop));
  if (int rc = uv_signal_init(loop.native(), r->signal_.get()); rc != 0) {
    return uv_error(rc, "watch SIGCHLD");
  }
  r->signal_.set_initialized();
  r->signal_->data = r.get();
  if (int rc = uv_signal_start(r->signal_.get(), [](uv_signal_t* s, int) {
        if (auto* self = owner_of<ChildReaper>(s)) self->reap();
      }, SIGCHLD); rc != 0) {
    return uv_error(rc, "watch SIGCHLD");
  }
  // Watching is passive: it must not keep a loop alive on its own.
  uv_unref(r->signal_.handle());
  return r;
}

ChildReaper::~ChildReaper() {
  signal_.close();
  // Children still here belong to objects that are gone: kill them. SIGKILL takes a moment to
  // land, so the ones not yet reapable are waited for on a helper thread, never on the loop.
  std::vector<pid_t> left;
  for (auto& [pid, child] : children_) {
    ::kill(-pid, SIGKILL);
    ::kill(pid, SIGKILL);
    int st = 0;
    pid_t r;
    do r = ::waitpid(pid, &st, WNOHANG); while (r < 0 && errno == EINTR);
    if (r == 0) left.push_back(pid);
  }
  children_.clear();
  if (!left.empty()) {
    std::thread([left] {
      for (pid_t pid : left) {
        int st = 0;
        while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
        }
      }
    }).detach();
  }
}

void ChildReaper::watch(pid_t pid, ExitHandler on_exit) {
  children_[pid].on_exit = std::move(on_exit);
}

void ChildReaper::drop_handler(pid_t pid) {
  auto it = children_.find(pid);
  if (it != children_.end()) it->second.on_exit = nullptr;
}

void ChildReaper::kill_group_later(pid_t pid, std::chrono::milliseconds delay) {
  auto it = children_.find(pid);
  if (it == children_.end()) return;
  if (!it->second.kill_timer) {
    // The timer belongs to the entry, which is erased when the child is reaped: the SIGKILL
    // therefore never reaches a recycled pid.
    it->second.kill_timer = loop_.create_timer([pid] {
      ::kill(-pid, SIGKILL);
      ::kill(pid, SIGKILL);
    });
  }
  if (!it->second.kill_timer->active()) it->second.kill_timer->start(delay);
}

void ChildReaper::reap() {
  // SIGCHLD coalesces, so every child is checked. Handlers run after the map is updated: they
  // may start or forget other children.
  std::vector<std::pair<ExitHandler, std::optional<int>>> done;
  for (auto it = children_.begin(); it != children_.end();) {
    int st = 0;
    pid_t r;
    do r = ::waitpid(it->first, &st, WNOHANG); while (r < 0 && errno == EINTR);
    if (r == 0) {
      ++it;
      continue;
    }
    std::optional<int> code;
    if (r == it->first) code = exit_code_from_wait_status(st);
    if (it->second.on_exit) done.emplace_back(std::move(it->second.on_exit), code);
    it = children_.erase(it);
  }
  for (auto& [handler, code] : done) handler(code);
}

// ---------------------------------------------------------------------------------------------
// Spawning

namespace {

constexpr std::size_t kReadChunk = 4096;
constexpr int kReadsPerWakeup = 16;  // then let other handles run
constexpr std::size_t kMaxPendingInput = 1024 * 1024;

enum ChildStage : int { kStageSetsid = 1, kStageCtty, kStageDup, kStageChdir, kStageExec };
struct ChildFailure {
  int stage;
  int err;
};

// Async-signal-safe only from here to execve: the parent may have other threads.
[[noreturn]] void child_fail(int report_fd, int stage) {
  ChildFailure f{stage, errno};
  ssize_t n;
  do n = ::write(report_fd, &f, sizeof(f)); while (n < 0 && errno == EINTR);
  _exit(127);
}

void close_range_fallback(int from, int to) {
  for (int fd = from; fd <= to; ++fd) ::close(fd);
}

[[noreturn]] void child_main(int slave, int report_fd, const char* cwd, char* const* argv,
                             char* const* envp, int max_fd) {
  // Dispositions the agent installed (libuv's handlers, SIGPIPE ignored) must not leak into
  // the command; the mask is cleared last, just before exec.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    ::sigaction(sig, &dfl, nullptr);
  }
  if (::setsid() < 0) child_fail(report_fd, kStageSetsid);
  if (::ioctl(slave, TIOCSCTTY, 0) < 0) child_fail(report_fd, kStageCtty);
  for (int fd = 0; fd < 3; ++fd) {
    if (::dup2(slave, fd) < 0) child_fail(report_fd, kStageDup);
  }
  // Both slave and report_fd are >= 3 (see spawn); everything else from 3 up goes, except the
  // report pipe, which exec closes (CLOEXEC).
  if (report_fd > 3 && ::close_range(3, static_cast<unsigned>(report_fd - 1), 0) != 0) {
    close_range_fallback(3, report_fd - 1);
  }
  if (::close_range(static_cast<unsigned>(report_fd + 1), ~0U, 0) != 0) {
    close_range_fallback(report_fd + 1, max_fd);
  }
  if (cwd && ::chdir(cwd) != 0) child_fail(report_fd, kStageChdir);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::execve(argv[0], argv, envp);
  child_fail(report_fd, kStageExec);
}

Error errno_error(int err, const std::string& what) {
  Errc code = Errc::Io;
  switch (err) {
    case ENOENT: code = Errc::NotFound; break;
    case ENOTDIR:
    case EINVAL:
    case ENAMETOOLONG: code = Errc::InvalidArgument; break;
    case EACCES:
    case EPERM: code = Errc::PolicyDenied; break;
    case EMFILE:
    case ENFILE:
    case ENOSPC:
    case EAGAIN:
    case ENOMEM: code = Errc::LimitExceeded; break;
    default: break;
  }
  return Error(code, what + ": " + std::strerror(err), ErrorSource::System, err);
}

// Moves `fd` to a number >= 3 (keeping CLOEXEC), so that dup2 onto 0..2 in the child can
// never clobber it even when the agent runs with stdio closed.
bool lift_above_stdio(int& fd) {
  if (fd >= 3) return true;
  int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (moved < 0) return false;
  ::close(fd);
  fd = moved;
  return true;
}

struct Spawned {
  pid_t pid = -1;
  int master = -1;
};

// On failure after fork, `pid` is still set: the caller must reap it.
Result<Spawned> spawn_on_pty(const PtySpawnOptions& o, pid_t& forked) {
  forked = -1;
  if (o.argv.empty() || o.argv[0].empty() || o.argv[0][0] != '/') {
    return Error(Errc::InvalidArgument, "the program to start must be an absolute path");
  }
  for (const auto& a : o.argv) {
    if (a.find('\0') != std::string::npos) {
      return Error(Errc::InvalidArgument, "the command contains a NUL byte");
    }
  }
  if (o.cwd.find('\0') != std::string::npos) {
    return Error(Errc::InvalidArgument, "the working directory contains a NUL byte");
  }
  // Everything the child needs is prepared here: it may not allocate after fork.
  std::vector<char*> argv;
  for (const auto& a : o.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (const auto& e : o.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  struct rlimit rl {};
  int max_fd = 1024;
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
    max_fd = static_cast<int>(std::min<rlim_t>(rl.rlim_cur, 65536));
  }

  int master = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (master < 0) return errno_error(errno, "open a pseudo-terminal");
  auto fail_master = [&](const std::string& what) {
    int err = errno;
    ::close(master);
    return errno_error(err, what);
  };
  if (::grantpt(master) != 0 || ::unlockpt(master) != 0) return fail_master("unlock a pseudo-terminal");
  char name[128];
  if (::ptsname_r(master, name, sizeof(name)) != 0) return fail_master("name a pseudo-terminal");
  struct winsize ws {};
  ws.ws_col = o.cols ? o.cols : 80;
  ws.ws_row = o.rows ? o.rows : 24;
  if (::ioctl(master, TIOCSWINSZ, &ws) != 0) return fail_master("size a pseudo-terminal");
  int fl = ::fcntl(master, F_GETFL);
  if (fl < 0 || ::fcntl(master, F_SETFL, fl | O_NONBLOCK) != 0) {
    return fail_master("make a pseudo-terminal non-blocking");
  }
  int slave = ::open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (slave < 0) return fail_master(std::string("open ") + name);
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) {
    int err = errno;
    ::close(slave);
    errno = err;
    return fail_master("create a pipe");
  }
  if (!lift_above_stdio(slave) || !lift_above_stdio(report[0]) || !lift_above_stdio(report[1])) {
    int err = errno;
    ::close(slave);
    ::close(report[0]);
    ::close(report[1]);
    errno = err;
    return fail_master("move descriptors above stdio");
  }

  // All signals are blocked across fork so that no handler of the agent (libuv's writes to its
  // signal pipe) runs in the child before the dispositions are reset.
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(report[0]);
    child_main(slave, report[1], o.cwd.empty() ? nullptr : o.cwd.c_str(), argv.data(),
               envp.data(), max_fd);
  }
  int fork_err = errno;
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  ::close(slave);
  ::close(report[1]);
  if (pid < 0) {
    ::close(report[0]);
    ::close(master);
    return errno_error(fork_err, "fork");
  }
  forked = pid;

  // EOF (exec closed the CLOEXEC pipe) means the program is running.
  ChildFailure f{};
  ssize_t n;
  do n = ::read(report[0], &f, sizeof(f)); while (n < 0 && errno == EINTR);
  ::close(report[0]);
  if (n == static_cast<ssize_t>(sizeof(f))) {
    ::close(master);
    switch (f.stage) {
      case kStageChdir:
        return errno_error(f.err, "change to the working directory " + o.cwd);
      case kStageExec:
        return errno_error(f.err, "start " + o.argv[0]);
      default:
        return errno_error(f.err, "set up the child's terminal");
    }
  }
  return Spawned{pid, master};
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// PtyProcess

Result<std::unique_ptr<PtyProcess>> PtyProcess::spawn(Loop& loop,
                                                      std::shared_ptr<ChildReaper> reaper,
                                                      const PtySpawnOptions& options,
                                                      Handlers handlers) {
  if (!reaper) return Error(Errc::Internal, "PtyProcess::spawn without a reaper");
  pid_t forked = -1;
  auto spawned = spawn_on_pty(options, forked);
  if (!spawned) {
    if (forked > 0) reaper->watch(forked, nullptr);  // it exits at once (127): reap it
    return std::move(spawned).error();
  }
  std::unique_ptr<PtyProcess> p(new PtyProcess(loop, reaper, spawned->pid, spawned->master,
                                               options, std::move(handlers)));
  PtyProcess* raw = p.get();
  reaper->watch(raw->pid_, [raw](std::optional<int> code) { raw->on_reaped(code); });
  if (auto st = p->start_polling(); !st) return st.error();  // the destructor kills the child
  return p;
}

PtyProcess::PtyProcess(Loop& loop, std::shared_ptr<ChildReaper> reaper, pid_t pid, int master,
                       const PtySpawnOptions& options, Handlers handlers)
    : loop_(loop),
      reaper_(std::move(reaper)),
      pid_(pid),
      master_(master),
      handlers_(std::move(handlers)),
      drain_grace_(options.drain_grace),
      paused_(options.start_paused) {}

PtyProcess::~PtyProcess() {
  close_master();
  if (!reaped_) {
    reaper_->drop_handler(pid_);
    ::kill(-pid_, SIGKILL);
  }
}

Status PtyProcess::start_polling() {
  poll_ = std::make_unique<UvHandle<uv_poll_t>>();
  if (int rc = uv_poll_init(loop_.native(), poll_->get(), master_); rc != 0) {
    poll_.reset();
    return uv_error(rc, "poll a pseudo-terminal");
  }
  poll_->set_initialized();
  poll_->get()->data = this;
  update_poll();
  return {};
}

void PtyProcess::update_poll() {
  if (!poll_) return;
  int events = 0;
  if (!paused_ && !eof_) events |= UV_READABLE;
  if (!pending_input_.empty()) events |= UV_WRITABLE;
  if (events == poll_events_) return;
  poll_events_ = events;
  if (events == 0) {
    uv_poll_stop(poll_->get());
    return;
  }
  uv_poll_start(poll_->get(), events, [](uv_poll_t* h, int status, int ev) {
    if (auto* self = owner_of<PtyProcess>(h)) self->on_poll(status, ev);
  });
}

void PtyProcess::on_poll(int status, int events) {
  if (status < 0) {
    // The descriptor is unusable (EBADF and the like): treat it as the end of output.
    on_master_eof();
    return;
  }
  if (events & UV_WRITABLE) flush_writes();
  if ((events & UV_READABLE) && master_ >= 0) read_some();
}

void PtyProcess::read_some() {
  static thread_local char buf[kReadChunk];
  for (int i = 0; i < kReadsPerWakeup; ++i) {
    // A handler may pause, terminate or close us; the object itself stays alive (deferred).
    if (master_ < 0 || paused_ || terminated_) return;
    ssize_t n = ::read(master_, buf, sizeof(buf));
    if (n > 0) {
      if (handlers_.on_output) handlers_.on_output(std::string_view(buf, static_cast<std::size_t>(n)));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    // 0 or EIO: every holder of the slave closed it.
    on_master_eof();
    return;
  }
}

void PtyProcess::flush_writes() {
  while (!pending_input_.empty() && master_ >= 0) {
    ssize_t n = ::write(master_, pending_input_.data(), pending_input_.size());
    if (n > 0) {
      pending_input_.erase(0, static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    pending_input_.clear();  // EIO: nobody will read it
    break;
  }
  update_poll();
}

Status PtyProcess::write(std::string_view bytes) {
  if (master_ < 0) return Error(Errc::InvalidArgument, "Process stdin is closed");
  if (pending_input_.size() + bytes.size() > kMaxPendingInput) {
    return Error(Errc::LimitExceeded,
                 "too much input is waiting for the terminal (1 MiB); the program is not "
                 "reading it");
  }
  bool was_empty = pending_input_.empty();
  pending_input_.append(bytes);
  if (was_empty) flush_writes();
  return {};
}

Status PtyProcess::resize(std::uint16_t cols, std::uint16_t rows) {
  if (master_ < 0) return Error(Errc::InvalidArgument, "the terminal is closed");
  if (cols == 0 || rows == 0) return Error(Errc::InvalidArgument, "terminal size must be at least 1x1");
  struct winsize ws {};
  ws.ws_col = cols;
  ws.ws_row = rows;
  if (::ioctl(master_, TIOCSWINSZ, &ws) != 0) return errno_error(errno, "resize the terminal");
  return {};
}

void PtyProcess::pause() {
  if (paused_) return;
  paused_ = true;
  update_poll();
}

void PtyProcess::resume() {
  if (!paused_) return;
  paused_ = false;
  update_poll();
  if (grace_due_ && !finished_ && !terminated_) {
    // Read what piled up while paused before calling it finished.
    grace_due_ = false;
    if (grace_timer_) grace_timer_->start(drain_grace_);
  }
}

bool PtyProcess::signal_group(int sig) {
  if (reaped_) return false;
  // Not reaped, so the pid (and the group it leads) cannot have been recycled.
  if (::kill(-pid_, sig) != 0) ::kill(pid_, sig);
  return true;
}

void PtyProcess::kill_group_later(std::chrono::milliseconds delay) {
  if (!reaped_) reaper_->kill_group_later(pid_, delay);
}

void PtyProcess::terminate(std::chrono::milliseconds grace) {
  if (terminated_) return;
  terminated_ = true;
  if (grace_timer_) grace_timer_->stop();
  close_master();
  if (!reaped_) {
    reaper_->drop_handler(pid_);
    signal_group(SIGTERM);
    reaper_->kill_group_later(pid_, grace);
  }
}

void PtyProcess::close_master() {
  if (poll_) {
    // uv_close removes the descriptor from epoll at once, so closing it right after is safe.
    poll_.reset();
    poll_events_ = 0;
  }
  if (master_ >= 0) {
    ::close(master_);
    master_ = -1;
  }
  pending_input_.clear();
}

void PtyProcess::on_master_eof() {
  if (eof_) return;
  eof_ = true;
  close_master();
  if (terminated_) return;
  if (handlers_.on_eof) handlers_.on_eof();
  maybe_finish();
}

void PtyProcess::on_reaped(std::optional<int> code) {
  reaped_ = true;
  exit_code_ = code;
  if (terminated_) return;
  maybe_finish();
  if (finished_ || eof_) return;
  if (!grace_timer_) grace_timer_ = loop_.create_timer([this] { on_grace(); });
  grace_timer_->start(drain_grace_);
}

void PtyProcess::on_grace() {
  if (finished_ || terminated_) return;
  if (paused_) {
    grace_due_ = true;
    return;
  }
  finish();
}

void PtyProcess::maybe_finish() {
  if (!finished_ && !terminated_ && reaped_ && eof_) finish();
}

void PtyProcess::finish() {
  finished_ = true;
  if (grace_timer_) grace_timer_->stop();
  if (handlers_.on_finished) handlers_.on_finished(exit_code_);
}

}  // namespace terminals::detail
