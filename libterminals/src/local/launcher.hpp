#pragma once

// Starts a local terminal's agent: fork, then in the child -- before exec, while still root --
// join the terminal's cgroups, set rlimits, drop to the terminal's OS user (no supplementary
// groups, no_new_privs), and hand the child one end of a readiness pipe as a fixed descriptor.
// Only async-signal-safe calls run between fork and exec (the process has other threads).

#include <sys/types.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "terminals/result.hpp"

namespace terminals::detail {

struct LaunchSpec {
  std::vector<std::string> argv;  ///< argv[0] is the absolute path executed
  std::vector<std::string> env;   ///< the complete environment, "NAME=value"
  std::string cwd;
  std::optional<uid_t> uid;       ///< drop to this uid/gid (with no supplementary groups)
  gid_t gid = 0;
  std::vector<std::string> cgroup_procs;  ///< cgroup.procs files to join before dropping
  std::optional<std::uint64_t> open_files;  ///< RLIMIT_NOFILE
  std::string log_path;  ///< stdout and stderr go here (appended), /dev/null when empty
  int ready_fd = 3;      ///< where the child finds the write end of the readiness pipe
  /// Bytes the child reads at a fixed descriptor (the read end of a pipe already holding them,
  /// at most 64 KiB each), e.g. bubblewrap's --seccomp program. Descriptors below 64.
  std::vector<std::pair<int, std::string>> data_fds;
};

struct Launched {
  pid_t pid = 0;
  int ready_read_fd = -1;  ///< non-blocking, close-on-exec; the child writes a line when ready
};

/// Fork + exec. Waits only for the exec itself (a close-on-exec pipe reports a failed setup
/// step or exec with its errno, which becomes the error: NotFound for a missing program,
/// PolicyDenied for EACCES/EPERM, Io otherwise). The child is in a new session.
Result<Launched> launch(const LaunchSpec& spec);

}  // namespace terminals::detail
