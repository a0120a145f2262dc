// OS accounts for terminal users.
//
// Creation appends the entries through glibc's own account API (lckpwdf, putpwent, putgrent,
// putspent, putsgent) under the same lock useradd takes, with ids picked the way useradd picks
// them (the next free one in login.defs' UID_MIN..UID_MAX). useradd itself costs ~200 ms per
// account here (it forks helpers and rewrites four files with fsync), which alone would blow
// the 30 ms cold-start budget of a new user; one appended, fsynced line per file costs ~1 ms.
// Deletion is rare and off the hot path: userdel does it.

#include "local/os_user.hpp"

#include <fcntl.h>
#include <grp.h>
#include <gshadow.h>
#include <pwd.h>
#include <shadow.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
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

// UID_MIN/UID_MAX (and GID_*) from /etc/login.defs, with useradd's defaults.
std::pair<unsigned long, unsigned long> id_range(const char* min_key, const char* max_key) {
  unsigned long lo = 1000, hi = 60000;
  std::ifstream defs("/etc/login.defs");
  std::string key;
  std::string value;
  std::string line;
  while (std::getline(defs, line)) {
    std::istringstream in(line);
    if (!(in >> key >> value) || key.empty() || key[0] == '#') continue;
    if (key == min_key) lo = std::strtoul(value.c_str(), nullptr, 10);
    if (key == max_key) hi = std::strtoul(value.c_str(), nullptr, 10);
  }
  return {lo, hi};
}

// Appends one entry with `put` to `path` and makes it durable. O_APPEND writes of one line are
// not interleaved with another writer, and the lock keeps other account tools out anyway.
template <class Put>
Status append_entry(const char* path, Put put) {
  std::FILE* f = std::fopen(path, "ae");
  if (!f) return Error(Errc::Io, std::string("cannot open ") + path + ": " + std::strerror(errno));
  bool ok = put(f) == 0 && std::fflush(f) == 0 && ::fsync(::fileno(f)) == 0;
  int e = errno;
  std::fclose(f);
  if (!ok) return Error(Errc::Io, std::string("cannot append to ") + path + ": " + std::strerror(e));
  return {};
}

// Creates the account; the caller holds accounts_mutex(). lckpwdf() serialises with useradd,
// passwd and friends in other processes.
Result<OsUser> create_account(const std::string& name, const std::string& home) {
  if (::lckpwdf() != 0) {
    return Error(Errc::BackendUnavailable,
                 std::string("cannot lock the account databases: ") + std::strerror(errno));
  }
  struct Unlock {
    ~Unlock() { ::ulckpwdf(); }
  } unlock;

  // A group of our name may be left from an interrupted creation: reuse it.
  std::optional<gid_t> gid;
  std::set<unsigned long> used;
  ::setpwent();
  while (struct passwd* pw = ::getpwent()) used.insert(pw->pw_uid);
  ::endpwent();
  ::setgrent();
  while (struct group* gr = ::getgrent()) {
    used.insert(gr->gr_gid);
    if (name == gr->gr_name) gid = gr->gr_gid;
  }
  ::endgrent();
  auto [lo, hi] = id_range("UID_MIN", "UID_MAX");
  // useradd's choice: one above the highest id in use within the range, else the lowest free.
  unsigned long id = 0;
  for (auto it = used.rbegin(); it != used.rend(); ++it) {
    if (*it >= lo && *it <= hi) {
      id = *it + 1;
      break;
    }
  }
  if (id == 0 || id > hi) {
    id = lo;
    while (id <= hi && used.count(id)) ++id;
  }
  if (id > hi) return Error(Errc::LimitExceeded, "no free user id left between UID_MIN and UID_MAX");
  uid_t uid = static_cast<uid_t>(id);
  std::string shell = ::access("/bin/bash", X_OK) == 0 ? "/bin/bash" : "/bin/sh";
  std::string marker(kOsUserMarker);
  std::string locked = "!";
  std::string x = "x";

  if (!gid) {
    gid = static_cast<gid_t>(id);
    char* no_members[] = {nullptr};
    struct group gr {};
    gr.gr_name = const_cast<char*>(name.c_str());
    gr.gr_passwd = x.data();
    gr.gr_gid = *gid;
    gr.gr_mem = no_members;
    if (auto s = append_entry("/etc/group", [&](std::FILE* f) { return ::putgrent(&gr, f); }); !s) {
      return std::move(s).error();
    }
    if (::access("/etc/gshadow", F_OK) == 0) {
      struct sgrp sg {};
      sg.sg_namp = const_cast<char*>(name.c_str());
      sg.sg_passwd = locked.data();
      sg.sg_adm = no_members;
      sg.sg_mem = no_members;
      if (auto s = append_entry("/etc/gshadow", [&](std::FILE* f) { return ::putsgent(&sg, f); }); !s) {
        return std::move(s).error();
      }
    }
  }
  struct passwd pw {};
  pw.pw_name = const_cast<char*>(name.c_str());
  pw.pw_passwd = x.data();
  pw.pw_uid = uid;
  pw.pw_gid = *gid;
  pw.pw_gecos = marker.data();
  pw.pw_dir = const_cast<char*>(home.c_str());
  pw.pw_shell = shell.data();
  if (::access("/etc/shadow", F_OK) == 0) {
    struct spwd sp {};
    sp.sp_namp = const_cast<char*>(name.c_str());
    sp.sp_pwdp = locked.data();  // no password: nobody logs in as a terminal user
    sp.sp_lstchg = static_cast<long>(std::time(nullptr) / 86400);
    sp.sp_min = sp.sp_max = sp.sp_warn = sp.sp_inact = sp.sp_expire = -1;
    sp.sp_flag = ~0ul;
    if (auto s = append_entry("/etc/shadow", [&](std::FILE* f) { return ::putspent(&sp, f); }); !s) {
      return std::move(s).error();
    }
  }
  // passwd last: the account exists (for getpwnam) only once everything it refers to does.
  if (auto s = append_entry("/etc/passwd", [&](std::FILE* f) { return ::putpwent(&pw, f); }); !s) {
    return std::move(s).error();
  }
  return OsUser{name, uid, *gid};
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
  auto created = create_account(name, home);
  if (!created) return created;
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
