#pragma once

// Resource limits for local terminals through cgroups, always in a subtree of our own
// (<controller mount>/<root name>/<terminal>), never touching groups we did not create.
//
// cgroup v1 (these machines): one directory per controller -- memory.limit_in_bytes (+ the
// memsw limit when swap accounting exists, so swap cannot stretch the limit), pids.max,
// cpu.cfs_quota_us/cpu.cfs_period_us; OOM kills counted in memory.oom_control's "oom_kill".
// cgroup v2 (when the unified hierarchy has the controllers): one directory with memory.max,
// memory.swap.max, pids.max, cpu.max; OOM kills in memory.events.
// When neither offers a controller a limit needs, create() fails with LimitExceeded rather than
// run the terminal unconfined.

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "terminals/backend.hpp"
#include "terminals/result.hpp"

namespace terminals::detail {

/// Where the controllers are mounted, read from /proc/self/mounts.
struct CgroupMounts {
  std::string memory;   ///< v1 mount points, empty when absent
  std::string pids;
  std::string cpu;
  std::string unified;  ///< the v2 mount, empty when absent
  bool v2_memory = false, v2_pids = false, v2_cpu = false;  ///< controllers usable on v2

  static CgroupMounts detect();
  /// Parses the text of /proc/self/mounts plus, for v2, the unified root's cgroup.controllers.
  static CgroupMounts parse(std::string_view mounts, std::string_view v2_controllers);
  bool any() const { return !memory.empty() || !pids.empty() || !cpu.empty() || v2_memory; }
};

/// Our subtree for the terminals of one data directory: "<cgroup_name>/<12 hex of a hash of
/// the data directory>". Two orchestrators on one host (or two test runs) with different data
/// directories therefore never share, signal or remove each other's groups, even for terminals
/// of the same name.
std::string cgroup_root_for(std::string_view data_dir, std::string_view cgroup_name);

/// The cgroup(s) of one terminal.
class TerminalCgroup {
 public:
  /// `root` may hold slashes (see cgroup_root_for). Creates (or reuses) <mount>/<root>/<terminal> for every controller available and writes
  /// the limits. Blocking file writes (fast; sysfs).
  static Result<TerminalCgroup> create(const CgroupMounts& mounts, const std::string& root,
                                       const std::string& terminal, const ResourceLimits& limits);
  /// The existing group of a terminal (adoption); directories that do not exist are skipped.
  static TerminalCgroup open(const CgroupMounts& mounts, const std::string& root,
                             const std::string& terminal);

  /// The cgroup.procs files a new process writes its pid into before exec: the hierarchies
  /// whose limits are set, plus pids always (it is how stop finds every process). On cgroup
  /// v1 each move costs a kernel RCU grace period (10-25 ms on a busy machine), so joining a
  /// hierarchy without a limit would only slow the start.
  const std::vector<std::string>& procs_files() const { return join_files_; }
  /// Every process in the group (from the first controller's cgroup.procs).
  std::vector<pid_t> pids() const;
  /// Signals every process in the group. Returns how many were signalled.
  std::size_t kill_all(int signal) const;
  /// OOM kills so far in this group.
  std::uint64_t oom_kills() const;
  /// The memory limit written, if any.
  std::optional<std::uint64_t> memory_limit() const { return memory_limit_; }
  /// Removes the directories (they must be empty of processes). Missing ones are fine.
  Status remove() const;
  bool empty() const { return dirs_.empty(); }

 private:
  std::vector<std::string> dirs_;         ///< every directory we made, one per hierarchy
  std::vector<std::string> procs_files_;  ///< every hierarchy's, for pids() and kill_all()
  std::vector<std::string> join_files_;
  std::string memory_dir_;
  bool memory_v2_ = false;
  std::optional<std::uint64_t> memory_limit_;
};

}  // namespace terminals::detail
