#include "local/cgroup.hpp"

#include "util/crypto.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

namespace terminals::detail {

namespace {

std::string read_small(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Status write_file(const std::string& path, const std::string& value) {
  std::ofstream out(path);
  if (!out) return Error(Errc::Io, "cannot open " + path + ": " + std::strerror(errno));
  out << value;
  out.flush();
  if (!out) return Error(Errc::Io, "cannot write '" + value + "' to " + path + ": " + std::strerror(errno));
  return {};
}

Status make_dir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
    return Error(Errc::Io, "cannot create cgroup " + path + ": " + std::strerror(errno));
  }
  return {};
}

// mkdir -p of `root` (which may hold slashes) below `mount`; returns the full path.
Result<std::string> make_root(const std::string& mount, const std::string& root) {
  std::string path = mount;
  std::size_t pos = 0;
  while (pos <= root.size()) {
    std::size_t slash = root.find('/', pos);
    if (slash == std::string::npos) slash = root.size();
    if (slash > pos) {
      path += "/" + root.substr(pos, slash - pos);
      if (auto s = make_dir(path); !s) return std::move(s).error();
    }
    pos = slash + 1;
  }
  return path;
}

bool has_word(std::string_view text, std::string_view word) {
  std::size_t pos = 0;
  while ((pos = text.find(word, pos)) != std::string_view::npos) {
    bool start = pos == 0 || text[pos - 1] == ' ' || text[pos - 1] == ',' || text[pos - 1] == '\n';
    std::size_t end = pos + word.size();
    bool stop = end == text.size() || text[end] == ' ' || text[end] == ',' || text[end] == '\n';
    if (start && stop) return true;
    pos = end;
  }
  return false;
}

}  // namespace

std::string cgroup_root_for(std::string_view data_dir, std::string_view cgroup_name) {
  return std::string(cgroup_name) + "/" + sha256_hex(std::string("terminals-data:") + std::string(data_dir)).substr(0, 12);
}

CgroupMounts CgroupMounts::parse(std::string_view mounts, std::string_view v2_controllers) {
  CgroupMounts m;
  std::size_t pos = 0;
  while (pos < mounts.size()) {
    std::size_t eol = mounts.find('\n', pos);
    if (eol == std::string_view::npos) eol = mounts.size();
    std::string_view line = mounts.substr(pos, eol - pos);
    pos = eol + 1;
    // device mountpoint fstype options dump pass
    std::string_view fields[4];
    std::size_t start = 0;
    for (auto& f : fields) {
      std::size_t sp = line.find(' ', start);
      f = line.substr(start, sp == std::string_view::npos ? std::string_view::npos : sp - start);
      start = sp == std::string_view::npos ? line.size() : sp + 1;
    }
    std::string_view point = fields[1], type = fields[2], options = fields[3];
    if (type == "cgroup") {
      if (has_word(options, "memory")) m.memory = std::string(point);
      if (has_word(options, "pids")) m.pids = std::string(point);
      if (has_word(options, "cpu")) m.cpu = std::string(point);
    } else if (type == "cgroup2") {
      m.unified = std::string(point);
    }
  }
  if (!m.unified.empty()) {
    m.v2_memory = m.memory.empty() && has_word(v2_controllers, "memory");
    m.v2_pids = m.pids.empty() && has_word(v2_controllers, "pids");
    m.v2_cpu = m.cpu.empty() && has_word(v2_controllers, "cpu");
  }
  return m;
}

CgroupMounts CgroupMounts::detect() {
  std::string mounts = read_small("/proc/self/mounts");
  CgroupMounts probe = parse(mounts, "");
  std::string controllers;
  if (!probe.unified.empty()) controllers = read_small(probe.unified + "/cgroup.controllers");
  return parse(mounts, controllers);
}

Result<TerminalCgroup> TerminalCgroup::create(const CgroupMounts& mounts, const std::string& root,
                                              const std::string& terminal,
                                              const ResourceLimits& limits) {
  TerminalCgroup g;
  auto need = [&](bool available, const char* what) -> Status {
    if (available) return {};
    return Error(Errc::LimitExceeded,
                 std::string("this host has no usable cgroup ") + what +
                     " controller, so the policy's " + what + " limit cannot be enforced");
  };
  bool v1_mem = !mounts.memory.empty(), v1_pids = !mounts.pids.empty(), v1_cpu = !mounts.cpu.empty();
  if (limits.memory_bytes) {
    if (auto s = need(v1_mem || mounts.v2_memory, "memory"); !s) return std::move(s).error();
  }
  if (limits.pids) {
    if (auto s = need(v1_pids || mounts.v2_pids, "pids"); !s) return std::move(s).error();
  }
  if (limits.cpus) {
    if (auto s = need(v1_cpu || mounts.v2_cpu, "cpu"); !s) return std::move(s).error();
  }

  auto dir_in = [&](const std::string& mount, bool join = true) -> Result<std::string> {
    auto parent = make_root(mount, root);
    if (!parent) return std::move(parent).error();
    std::string dir = *parent + "/" + terminal;
    if (auto s = make_dir(dir); !s) return std::move(s).error();
    g.dirs_.push_back(dir);
    g.procs_files_.push_back(dir + "/cgroup.procs");
    if (join) g.join_files_.push_back(dir + "/cgroup.procs");
    return dir;
  };

  if (v1_mem && limits.memory_bytes) {
    auto dir = dir_in(mounts.memory);
    if (!dir) return std::move(dir).error();
    g.memory_dir_ = *dir;
    if (limits.memory_bytes) {
      std::string v = std::to_string(*limits.memory_bytes);
      // memsw must stay >= the memory limit: lower memory first when shrinking, raise memsw
      // first when growing. Writing both twice covers either order.
      bool memsw = ::access((*dir + "/memory.memsw.limit_in_bytes").c_str(), F_OK) == 0;
      (void)write_file(*dir + "/memory.limit_in_bytes", v);
      if (memsw) (void)write_file(*dir + "/memory.memsw.limit_in_bytes", v);
      if (auto s = write_file(*dir + "/memory.limit_in_bytes", v); !s) return std::move(s).error();
      if (memsw) {
        if (auto s = write_file(*dir + "/memory.memsw.limit_in_bytes", v); !s) return std::move(s).error();
      }
      g.memory_limit_ = limits.memory_bytes;
    }
  }
  if (v1_pids) {
    auto dir = dir_in(mounts.pids);
    if (!dir) return std::move(dir).error();
    std::string v = limits.pids ? std::to_string(*limits.pids) : "max";
    if (auto s = write_file(*dir + "/pids.max", v); !s) return std::move(s).error();
  }
  if (v1_cpu && limits.cpus) {
    auto dir = dir_in(mounts.cpu);
    if (!dir) return std::move(dir).error();
    constexpr long kPeriod = 100000;
    std::string quota =
        limits.cpus ? std::to_string(std::max<long>(1000, static_cast<long>(*limits.cpus * kPeriod))) : "-1";
    if (auto s = write_file(*dir + "/cpu.cfs_period_us", std::to_string(kPeriod)); !s) return std::move(s).error();
    if (auto s = write_file(*dir + "/cpu.cfs_quota_us", quota); !s) return std::move(s).error();
  }
  if (mounts.v2_memory || mounts.v2_pids || mounts.v2_cpu) {
    auto parent = make_root(mounts.unified, root);
    if (!parent) return std::move(parent).error();
    std::string enable;
    if (mounts.v2_memory) enable += "+memory ";
    if (mounts.v2_pids) enable += "+pids ";
    if (mounts.v2_cpu) enable += "+cpu ";
    // v2 hands controllers down one level at a time: enable them from the mount to our root.
    (void)write_file(mounts.unified + "/cgroup.subtree_control", enable);
    for (std::size_t pos = mounts.unified.size() + 1; pos <= parent->size();) {
      std::size_t slash = parent->find('/', pos);
      if (slash == std::string::npos) slash = parent->size();
      if (auto s = write_file(parent->substr(0, slash) + "/cgroup.subtree_control", enable); !s) {
        return std::move(s).error();
      }
      pos = slash + 1;
    }
    auto dir = dir_in(mounts.unified);
    if (!dir) return std::move(dir).error();
    if (mounts.v2_memory) {
      g.memory_dir_ = *dir;
      g.memory_v2_ = true;
      if (limits.memory_bytes) {
        if (auto s = write_file(*dir + "/memory.max", std::to_string(*limits.memory_bytes)); !s) {
          return std::move(s).error();
        }
        (void)write_file(*dir + "/memory.swap.max", "0");
        g.memory_limit_ = limits.memory_bytes;
      }
    }
    if (mounts.v2_pids) {
      if (auto s = write_file(*dir + "/pids.max", limits.pids ? std::to_string(*limits.pids) : "max"); !s) {
        return std::move(s).error();
      }
    }
    if (mounts.v2_cpu && limits.cpus) {
      long quota = std::max<long>(1000, static_cast<long>(*limits.cpus * 100000));
      if (auto s = write_file(*dir + "/cpu.max", std::to_string(quota) + " 100000"); !s) {
        return std::move(s).error();
      }
    }
  }
  return g;
}

TerminalCgroup TerminalCgroup::open(const CgroupMounts& mounts, const std::string& root,
                                    const std::string& terminal) {
  TerminalCgroup g;
  auto add = [&](const std::string& mount, bool memory, bool v2) {
    if (mount.empty()) return;
    std::string dir = mount + "/" + root + "/" + terminal;
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0) return;
    g.dirs_.push_back(dir);
    g.procs_files_.push_back(dir + "/cgroup.procs");
    if (memory) {
      g.memory_dir_ = dir;
      g.memory_v2_ = v2;
      std::string limit = read_small(dir + (v2 ? "/memory.max" : "/memory.limit_in_bytes"));
      char* end = nullptr;
      unsigned long long v = std::strtoull(limit.c_str(), &end, 10);
      if (end != limit.c_str() && v < (1ull << 60)) g.memory_limit_ = v;
    }
  };
  add(mounts.memory, true, false);
  add(mounts.pids, false, false);
  add(mounts.cpu, false, false);
  if (mounts.v2_memory || mounts.v2_pids || mounts.v2_cpu) add(mounts.unified, mounts.v2_memory, true);
  return g;
}

std::vector<pid_t> TerminalCgroup::pids() const {
  std::vector<pid_t> out;
  for (const auto& file : procs_files_) {
    std::ifstream in(file);
    long pid = 0;
    while (in >> pid) {
      if (std::find(out.begin(), out.end(), static_cast<pid_t>(pid)) == out.end()) {
        out.push_back(static_cast<pid_t>(pid));
      }
    }
  }
  return out;
}

std::size_t TerminalCgroup::kill_all(int signal) const {
  std::size_t n = 0;
  for (pid_t pid : pids()) {
    if (pid > 1 && ::kill(pid, signal) == 0) ++n;
  }
  return n;
}

std::uint64_t TerminalCgroup::oom_kills() const {
  if (memory_dir_.empty()) return 0;
  std::string text = read_small(memory_dir_ + (memory_v2_ ? "/memory.events" : "/memory.oom_control"));
  auto pos = text.find("oom_kill ");
  if (pos == std::string::npos) return 0;
  return std::strtoull(text.c_str() + pos + 9, nullptr, 10);
}

Status TerminalCgroup::remove() const {
  std::string failed;
  for (auto it = dirs_.rbegin(); it != dirs_.rend(); ++it) {
    if (::rmdir(it->c_str()) != 0 && errno != ENOENT) {
      failed += (failed.empty() ? "" : ", ") + *it + " (" + std::strerror(errno) + ")";
    }
  }
  if (!failed.empty()) return Error(Errc::Io, "cannot remove cgroup " + failed);
  return {};
}

}  // namespace terminals::detail
