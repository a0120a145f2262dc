// OS accounts for terminal users. useradd/userdel do the work: they take the passwd and shadow
// locks, pick a free uid in the system's range and update every database consistently, which
// writing /etc/passwd ourselves would not.

#include "local/os_user.hpp"

#include <fcntl.h>
#include <pwd.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <vector>

#include "util/crypto.hpp"

extern char** environ;

namespace terminals::detail {

namespace {

std::mutex& accounts_mutex() {
  static std::mutex m;
  return m;
}

Result<OsUser> lookup(const std::string& name, bool* exists_not_ours) {
  struct passwd pw {};
  struct passwd* found = nullptr;
  std::vector<char> buf(16384);
  int rc = ::getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &found);
  if (rc != 0) return Error(Errc::Io, "looking up account '" + name + "': " + std::strerror(rc));
  if (!found) return Error(Errc::NotFound, "no account '" + name + "'");
  if (std::string_view(pw.pw_gecos ? pw.pw_gecos : "") != kOsUserMarker) {
    if (exists_not_ours) *exists_not_ours = true;
    return Error(Errc::PolicyDenied, "account '" + name +
                                         "' exists and was not created by libterminals; "
                                         "refusing to run a terminal as it");
  }
  return OsUser{name, pw.pw_uid, pw.pw_gid};
}

}  // namespace

std::string user_hash(std::string_view user_id) {
  std::string input = "terminals-user:";
  input.append(user_id);
  return sha256_hex(input).substr(0, 24);
}

std::string os_user_name(std::string_view user_id) { return "t" + user_hash(user_id); }

Result<std::string> run_command_blocking(const std::vector<std::string>& argv) {
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return Error(Errc::Io, std::string("pipe: ") + std::strerror(errno));
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  posix_spawn_file_actions_adddup2(&actions, out[1], 2);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  char path_env[] = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";
  char* envp[] = {path_env, nullptr};
  pid_t pid = 0;
  int rc = ::posix_spawn(&pid, argv[0].c_str(), &actions, nullptr, args.data(), envp);
  posix_spawn_file_actions_destroy(&actions);
  ::close(out[1]);
  if (rc != 0) {
    ::close(out[0]);
    return Error(Errc::Io, "cannot run " + argv[0] + ": " + std::strerror(rc));
  }
  std::string output;
  char chunk[4096];
  for (;;) {
    ssize_t n = ::read(out[0], chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (output.size() < 65536) output.append(chunk, static_cast<std::size_t>(n));
  }
  ::close(out[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::string what = argv[0];
    for (std::size_t i = 1; i < argv.size(); ++i) what += " " + argv[i];
    while (!output.empty() && (output.back() == '\n' || output.back() == ' ')) output.pop_back();
    return Error(Errc::Io, what + " failed (" +
                               (WIFEXITED(status) ? "exit " + std::to_string(WEXITSTATUS(status))
                                                  : "signal " + std::to_string(WTERMSIG(status))) +
                               ")" + (output.empty() ? "" : ": " + output));
  }
  return output;
}

Result<OsUser> find_os_user(const std::string& name) { return lookup(name, nullptr); }

Result<OsUser> ensure_os_user(const std::string& name, const std::string& home) {
  std::lock_guard<std::mutex> lock(accounts_mutex());
  bool not_ours = false;
  auto existing = lookup(name, &not_ours);
  if (existing || not_ours || existing.error().code != Errc::NotFound) return existing;
  if (::geteuid() != 0) {
    return Error(Errc::PolicyDenied,
                 "creating the account for a terminal user needs root; run as root or use "
                 "isolation 'none'");
  }
  std::string shell = ::access("/bin/bash", X_OK) == 0 ? "/bin/bash" : "/bin/sh";
  auto created = run_command_blocking({"/usr/sbin/useradd", "--comment", std::string(kOsUserMarker),
                                       "--home-dir", home, "--no-create-home", "--shell", shell,
                                       "--user-group", "--no-log-init", name});
  if (!created) return std::move(created).error();
  return lookup(name, nullptr);
}

Status remove_os_user(const std::string& name) {
  std::lock_guard<std::mutex> lock(accounts_mutex());
  auto existing = lookup(name, nullptr);
  if (!existing) {
    if (existing.error().code == Errc::NotFound) return {};
    return std::move(existing).error();
  }
  auto removed = run_command_blocking({"/usr/sbin/userdel", name});
  if (!removed) return std::move(removed).error();
  return {};
}

}  // namespace terminals::detail
