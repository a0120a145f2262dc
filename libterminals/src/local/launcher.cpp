#include "local/launcher.hpp"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iterator>
#include <string>

namespace terminals::detail {

namespace {

// Descriptors the child places at fixed numbers below this one are first moved above it.
constexpr int kHighFd = 64;

// What the child reports through the error pipe when a step fails: the step and its errno.
struct ChildFailure {
  int step;
  int error;
};

constexpr const char* kSteps[] = {"open the log file",      "start a new session",
                                  "join the cgroup",        "set resource limits",
                                  "drop supplementary groups", "switch group",
                                  "switch user",            "set no_new_privs",
                                  "change directory",       "set up descriptors",
                                  "execute the agent"};

[[noreturn]] void fail(int pipe_fd, int step) {
  ChildFailure f{step, errno};
  [[maybe_unused]] auto n = ::write(pipe_fd, &f, sizeof f);
  ::_exit(127);
}

std::size_t decimal(char* out, long v) {
  char tmp[24];
  std::size_t n = 0;
  do {
    tmp[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v > 0);
  for (std::size_t i = 0; i < n; ++i) out[i] = tmp[n - 1 - i];
  return n;
}

}  // namespace

Result<Launched> launch(const LaunchSpec& spec) {
  if (spec.argv.empty()) return Error(Errc::InvalidArgument, "nothing to launch");
  // Everything the child needs is prepared here: after fork only syscalls run.
  std::vector<char*> argv, envp;
  for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const auto& e : spec.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  std::string log = spec.log_path.empty() ? "/dev/null" : spec.log_path;

  // The data descriptors: pipes filled here (a pipe holds 64 KiB, so writing cannot block),
  // their read ends handed to the child, closed on every path out of this function.
  std::vector<std::pair<int, int>> data;  // (read end, target)
  struct CloseData {
    std::vector<std::pair<int, int>>& fds;
    ~CloseData() {
      for (auto [fd, target] : fds) ::close(fd);
    }
  } close_data{data};
  for (const auto& [target, bytes] : spec.data_fds) {
    if (target < 3 || target >= kHighFd || target == spec.ready_fd || bytes.size() > 65536) {
      return Error(Errc::InvalidArgument,
                   "a data descriptor must be 3..63, not the ready one, and hold <= 64 KiB");
    }
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return Error(Errc::Io, std::string("pipe: ") + std::strerror(errno));
    data.emplace_back(p[0], target);
    ssize_t n = ::write(p[1], bytes.data(), bytes.size());
    int e = errno;
    ::close(p[1]);
    if (n != static_cast<ssize_t>(bytes.size())) {
      return Error(Errc::Io, std::string("pipe: ") + (n < 0 ? std::strerror(e) : "short write"));
    }
  }

  int ready[2], errors[2];
  if (::pipe2(ready, O_CLOEXEC) != 0) return Error(Errc::Io, std::string("pipe: ") + std::strerror(errno));
  if (::pipe2(errors, O_CLOEXEC) != 0) {
    ::close(ready[0]);
    ::close(ready[1]);
    return Error(Errc::Io, std::string("pipe: ") + std::strerror(errno));
  }

  pid_t pid = ::fork();
  if (pid < 0) {
    int e = errno;
    for (int fd : {ready[0], ready[1], errors[0], errors[1]}) ::close(fd);
    return Error(e == EAGAIN ? Errc::LimitExceeded : Errc::Io, std::string("fork: ") + std::strerror(e));
  }
  if (pid == 0) {
    int err = errors[1];
    // Default signal handling and an empty mask: the orchestrator's handlers mean nothing here.
    sigset_t all;
    sigemptyset(&all);
    ::sigprocmask(SIG_SETMASK, &all, nullptr);
    for (int s = 1; s < NSIG; ++s) ::signal(s, SIG_DFL);

    int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (log_fd < 0) fail(err, 0);
    if (::setsid() < 0) fail(err, 1);
    char pid_text[24];
    std::size_t pid_len = decimal(pid_text, static_cast<long>(::getpid()));
    for (const auto& file : spec.cgroup_procs) {
      int fd = ::open(file.c_str(), O_WRONLY | O_CLOEXEC);
      if (fd < 0 || ::write(fd, pid_text, pid_len) < 0) fail(err, 2);
      ::close(fd);
    }
    struct rlimit no_core {0, 0};
    if (::setrlimit(RLIMIT_CORE, &no_core) != 0) fail(err, 3);
    if (spec.open_files) {
      struct rlimit files {*spec.open_files, *spec.open_files};
      if (::setrlimit(RLIMIT_NOFILE, &files) != 0) fail(err, 3);
    }
    if (spec.uid) {
      if (::setgroups(0, nullptr) != 0) fail(err, 4);
      if (::setresgid(spec.gid, spec.gid, spec.gid) != 0) fail(err, 5);
      if (::setresuid(*spec.uid, *spec.uid, *spec.uid) != 0) fail(err, 6);
    }
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) fail(err, 7);
    if (!spec.cwd.empty() && ::chdir(spec.cwd.c_str()) != 0) fail(err, 8);
    int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null_fd < 0) fail(err, 9);
    // The readiness and data descriptors go to their fixed numbers. First all of them out of
    // the way (at 64 and up), so that none sits on another's target when it is placed.
    int ready_high = ::fcntl(ready[1], F_DUPFD_CLOEXEC, kHighFd);
    if (ready_high < 0) fail(err, 9);
    for (auto& [fd, target] : data) {
      fd = ::fcntl(fd, F_DUPFD_CLOEXEC, kHighFd);
      if (fd < 0) fail(err, 9);
    }
    // dup2 clears close-on-exec on the targets, so exactly 0-2, ready_fd and the data
    // descriptors survive exec.
    if (::dup2(null_fd, 0) < 0 || ::dup2(log_fd, 1) < 0 || ::dup2(log_fd, 2) < 0 ||
        ::dup2(ready_high, spec.ready_fd) < 0) {
      fail(err, 9);
    }
    for (auto [fd, target] : data) {
      if (::dup2(fd, target) < 0) fail(err, 9);
    }
    ::execve(argv[0], argv.data(), envp.data());
    fail(err, 10);
  }

  ::close(ready[1]);
  ::close(errors[1]);
  ChildFailure failure{};
  ssize_t n;
  do {
    n = ::read(errors[0], &failure, sizeof failure);
  } while (n < 0 && errno == EINTR);
  ::close(errors[0]);
  if (n == static_cast<ssize_t>(sizeof failure)) {
    ::close(ready[0]);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    Errc code = failure.error == ENOENT                             ? Errc::NotFound
                : failure.error == EACCES || failure.error == EPERM ? Errc::PolicyDenied
                : failure.error == EAGAIN                           ? Errc::LimitExceeded
                                                                    : Errc::Io;
    int step = failure.step >= 0 && failure.step < static_cast<int>(std::size(kSteps)) ? failure.step : 10;
    return Error(code, std::string("starting ") + spec.argv[0] + ": cannot " + kSteps[step] + ": " +
                           std::strerror(failure.error));
  }
  int flags = ::fcntl(ready[0], F_GETFL);
  ::fcntl(ready[0], F_SETFL, flags | O_NONBLOCK);
  return Launched{pid, ready[0]};
}

}  // namespace terminals::detail
