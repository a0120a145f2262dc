#pragma once

/// @file backend.hpp
/// `Backend`: where terminals run. The orchestrator asks a backend to provision the terminal of
/// a (user, policy, context), to report on it, to stop and to remove it, and after a restart to
/// list what it already runs so those terminals are adopted instead of created twice.
/// Implementations: `LocalBackend` (local_backend.hpp), `DockerBackend` (docker_backend.hpp)
/// and, in later releases, Kubernetes.

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "terminals/endpoint.hpp"
#include "terminals/export.hpp"
#include "terminals/function.hpp"
#include "terminals/result.hpp"

namespace terminals {

/// How strongly a local terminal is separated from the host and from other users.
enum class Isolation {
  None,     ///< the agent runs as this process's user: development only
  User,     ///< a dedicated OS user per terminal user, no supplementary groups, no_new_privs
  Sandbox,  ///< User plus private mount, pid, ipc, uts (and network) namespaces (bubblewrap)
};
/// "none", "user", "sandbox".
TERMINALS_API const char* isolation_name(Isolation isolation) noexcept;
/// Parses "none" | "user" | "sandbox"; InvalidArgument otherwise.
TERMINALS_API Result<Isolation> parse_isolation(std::string_view text);

/// What a terminal may reach over the network.
enum class NetworkMode {
  None,  ///< loopback only, in its own network namespace
  Host,  ///< the host's network
};

/// Per-terminal resource limits; empty means "no limit of this kind".
struct ResourceLimits {
  std::optional<std::uint64_t> memory_bytes;  ///< going over kills the offending process
  std::optional<double> cpus;                 ///< CPU time in cores (0.5 = half of one core)
  std::optional<std::uint32_t> pids;          ///< processes and threads
  std::optional<std::uint64_t> open_files;    ///< RLIMIT_NOFILE per process
  /// Disk the terminal may write outside its home (container writable layer); backends that
  /// cannot enforce it say so in a warning and run without it.
  std::optional<std::uint64_t> storage_bytes;
};

/// What to provision. Backends ignore the fields that do not apply to them.
struct TerminalSpec {
  std::string user_id;                     ///< who it is for (any string; backends hash it)
  std::string policy_id = "default";
  std::string context_id;                  ///< empty: the user's default terminal
  std::string image;                       ///< container backends
  std::map<std::string, std::string> env;  ///< extra environment for the agent's commands
  ResourceLimits limits;
  std::optional<Isolation> isolation;      ///< empty: the backend's default
  NetworkMode network = NetworkMode::None;
  /// Egress allow-list (host names, addresses, CIDRs) on top of `network`. Backends that cannot
  /// enforce one refuse a spec that has it (PolicyDenied), rather than run without it.
  std::vector<std::string> egress_allow;
  /// For the orchestrator, not backends: stop the terminal after this long without activity.
  /// Empty: the orchestrator's default; 0: never.
  std::optional<std::chrono::minutes> idle_timeout;
};

enum class TerminalState { Provisioning, Running, Stopping, Stopped, Error };
/// "provisioning", "running", "stopping", "stopped", "error".
TERMINALS_API const char* terminal_state_name(TerminalState state) noexcept;

/// A terminal as its backend reports it.
struct TerminalInfo {
  /// The backend-side name, derived from a hash of the ids (`Backend::terminal_name`): user
  /// ids never reach file names, account names or container names as given.
  std::string name;
  std::string user_id;
  std::string policy_id;
  std::string context_id;
  TerminalState state = TerminalState::Stopped;
  /// Why it is stopped or in error, e.g. "killed: out of memory (limit 64 MiB)". Empty when
  /// running normally.
  std::string reason;
  Endpoint endpoint;    ///< where its agent listens (meaningful while running)
  std::string api_key;  ///< the agent's bearer key; never logged, never shown to users
  std::chrono::system_clock::time_point created_at{};
};

/// The interface every backend implements. All calls complete on the loop thread, exactly
/// once and never inside the call. Destroying a backend cancels what is in flight (callbacks
/// then complete with Cancelled) but leaves running terminals running, to be adopted later.
class TERMINALS_API Backend {
 public:
  virtual ~Backend() = default;

  /// "local", "docker", ...
  virtual std::string_view kind() const = 0;

  /// The name this backend gives the terminal of (user, policy, context). Deterministic and
  /// derived from a hash, so hostile ids ("", "..", "a/b", 300 characters) are harmless and
  /// distinct triples get distinct names.
  virtual std::string terminal_name(std::string_view user_id, std::string_view policy_id,
                                    std::string_view context_id) const = 0;

  /// Makes the terminal of `spec` run (creating it, or starting a stopped one with its data)
  /// and completes once its agent answers, with its endpoint and key. Errors: InvalidArgument
  /// or PolicyDenied for a spec the backend refuses, LimitExceeded, BackendUnavailable,
  /// Timeout (not ready within the start timeout; the half-started terminal is removed).
  virtual void provision(const TerminalSpec& spec, Callback<TerminalInfo> done) = 0;
  /// The current state of terminal `name`. NotFound when the backend has no such terminal.
  virtual void inspect(std::string_view name, Callback<TerminalInfo> done) = 0;
  /// Stops the terminal's processes and keeps its data. NotFound.
  virtual void stop(std::string_view name, Callback<void> done) = 0;
  /// Stops and forgets the terminal; with `delete_data` its home goes too. NotFound.
  virtual void remove(std::string_view name, bool delete_data, Callback<void> done) = 0;
  /// Every terminal the backend manages, running or stopped, for adoption after a restart.
  /// Leftovers of terminals that died are cleaned up on the way.
  virtual void list(Callback<std::vector<TerminalInfo>> done) = 0;
  /// What a terminal that is being provisioned is waiting for, for status pages ("pulling
  /// image x: 12 of 25 MB"). Empty when there is nothing to say.
  virtual std::string progress(std::string_view name) const {
    (void)name;
    return {};
  }
};

}  // namespace terminals
