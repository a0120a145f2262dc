#pragma once

/// @file local_backend.hpp
/// `LocalBackend`: one `terminals-agent` per terminal on this host, no container engine.
///
/// Layout under the data directory (created 0711, owned by the orchestrator):
///   homes/<user hash>/                 the terminal user's home, 0700, owned by its OS user
///   homes/<user hash>/contexts/<hash>/ the home of a non-default context
///   run/<terminal>/                    runtime directory, 0700, owned by the OS user:
///       agent.sock                     the agent's unix socket
///       key                            the agent's bearer key, 0600
///   terminals/<terminal>.json          what the orchestrator knows of it (ids, pid), 0600
///
/// Isolation (per terminal, `TerminalSpec::isolation`, else `default_isolation`):
///   none     the agent runs as this process's user (development; a warning is logged);
///   user     a dedicated OS user per terminal user, named "t" + 24 hex characters of a hash
///            of the user id (an existing account of that name that we did not create is
///            refused), with no supplementary groups and no_new_privs;
///   sandbox  user, plus bubblewrap: private mount, pid, ipc and uts namespaces, only its own
///            home visible, private /tmp, read-only system directories, no network unless the
///            spec asks for the host's.
/// `user` and `sandbox` need root. Limits go to cgroups in a subtree of our own
/// (`cgroup_name`; v1 controllers where they are mounted, else v2) and to rlimits.

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "terminals/backend.hpp"
#include "terminals/export.hpp"
#include "terminals/result.hpp"

namespace terminals {

class Loop;

struct LocalBackendOptions {
  /// Where homes, runtime directories and state live. Required.
  std::string data_dir;
  /// The agent binary. Empty: `terminals-agent` next to the running executable, then on PATH.
  std::string agent_path;
  /// Used when a spec names none. Empty: `sandbox` when running as root with bubblewrap
  /// installed, `user` as root without it, else `none`.
  std::optional<Isolation> default_isolation;
  /// bubblewrap; empty or missing makes `sandbox` unavailable.
  std::string bwrap_path = "/usr/bin/bwrap";
  /// Our cgroup subtree: /sys/fs/cgroup/<controller>/<cgroup_name>/<hash of data_dir>/<terminal>,
  /// so backends with different data directories never touch each other's groups.
  std::string cgroup_name = "terminals";
  /// A terminal whose agent is not ready by then is removed and provision fails with Timeout.
  std::chrono::milliseconds start_timeout{10'000};
  /// SIGTERM to SIGKILL when stopping.
  std::chrono::milliseconds stop_grace{3'000};
};

class TERMINALS_API LocalBackend : public Backend {
 public:
  /// Checks the options (data directory writable, agent binary executable, the default
  /// isolation possible here) and creates the data directory's layout.
  static Result<std::unique_ptr<LocalBackend>> create(Loop& loop, LocalBackendOptions options);
  /// The isolation used for specs that name none.
  virtual Isolation default_isolation() const = 0;
};

using LocalBackendPtr = std::unique_ptr<LocalBackend>;

}  // namespace terminals
