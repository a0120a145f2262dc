#pragma once

/// @file orchestrator.hpp
/// `Orchestrator`: the lifecycle of terminals above a `Backend`. It hands out a running terminal
/// per (user, policy, context), provisioning it on first use; throttles provisioning; records
/// activity; stops idle terminals; adopts what the backend already runs after a restart; and
/// serves the admin operations (list, stop, refresh).
///
/// Per key, one operation runs at a time (provision, status check or stop) and requests that
/// arrive meanwhile wait for it, so N concurrent first requests cause one provision, and a stop
/// never pulls a terminal from under a request that is being handed it: an acquire that arrives
/// while its terminal is stopping waits and then provisions it again.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "terminals/backend.hpp"
#include "terminals/export.hpp"
#include "terminals/function.hpp"
#include "terminals/result.hpp"

namespace terminals {

class Loop;

/// Which terminal. `policy_id` "" is read as "default"; `context_id` "" is the user's default
/// terminal ("default" is read as "" too). Validating context ids (chat:/automation:) is the
/// HTTP layer's job; here any string is fine, backends hash ids.
struct TerminalKey {
  std::string user_id{};
  std::string policy_id = "default";
  std::string context_id{};
};

struct OrchestratorOptions {
  /// Spawn throttling: at most this many provisions in flight at once.
  std::size_t max_concurrent_provisions = 8;
  /// Keys waiting for a provision slot; beyond, `acquire` fails with LimitExceeded and a
  /// retry-after hint (`retry_after_seconds`).
  std::size_t max_queued_provisions = 256;
  /// How often the idle reaper sweeps.
  std::chrono::seconds reaper_interval{30};
  /// Idle timeout for terminals whose spec names none. 0: never.
  std::chrono::minutes default_idle_timeout{30};
  /// `acquire` trusts that a terminal still runs for this long after confirming it, then asks
  /// the backend again (`Backend::inspect`). 0: ask on every acquire.
  std::chrono::milliseconds status_ttl{2'000};
  /// For `refresh(only_idle)` when a terminal's idle timeout is 0 (never reaped): it counts as
  /// idle after this long without activity and connections, so rollouts still reach it.
  std::chrono::minutes refresh_quiet_period{5};
  /// The clock idle times are measured with. Empty: `std::chrono::steady_clock::now`. Tests
  /// inject a clock to pass idle timeouts without waiting.
  std::function<std::chrono::steady_clock::time_point()> clock;
  /// Called on the loop thread for each lifecycle event of a terminal, for audit logs:
  /// "provisioned", "provision_failed", "stopped", "reset", "stop_failed"; `detail` says why
  /// (an error message, "stopped after 30 minutes without activity", ...). Must not call back
  /// into the orchestrator.
  std::function<void(std::string_view event, const TerminalKey& key, std::string_view detail)> on_event;
};

/// Supplies the spec for a key (policy lookup lives elsewhere). NotFound for an unknown policy.
/// The orchestrator overwrites the spec's ids with the key's.
using SpecResolver = std::function<Result<TerminalSpec>(const TerminalKey&)>;

/// One terminal as the orchestrator tracks it. Never carries the terminal's api key.
struct TerminalRow {
  TerminalKey key;
  std::string name;  ///< the backend's name for it
  TerminalState state = TerminalState::Stopped;
  std::string reason;  ///< why it is stopped or in error
  std::chrono::system_clock::time_point created_at{}, last_activity{};
  std::size_t open_connections = 0;
};

/// The retry-after hint (whole seconds, at least 1) of a LimitExceeded error from `acquire`'s
/// throttle; empty for any other error.
TERMINALS_API std::optional<std::uint32_t> retry_after_seconds(const Error& error);

class TERMINALS_API Orchestrator {
 public:
  /// `backend` must outlive the orchestrator. InvalidArgument for a zero concurrency, an
  /// empty resolver or a zero reaper interval.
  static Result<std::unique_ptr<Orchestrator>> create(Loop& loop, Backend& backend, SpecResolver resolver,
                                                      OrchestratorOptions options = {});
  /// Cancels pending acquires, stops and refreshes (their callbacks run later with Cancelled)
  /// and leaves terminals running, to be adopted next time.
  virtual ~Orchestrator() = default;

  /// Adopts what the backend lists: running terminals are tracked with their keys, activity
  /// "now" and the idle timeout their policy has now; stopped ones are listed. Acquires made
  /// meanwhile wait for it. Errors from `Backend::list` propagate.
  virtual void start(Callback<void> done) = 0;

  /// A running terminal for `key`, provisioned if needed; counts as activity. Errors:
  /// InvalidArgument (empty user id), NotFound (unknown policy, from the resolver),
  /// LimitExceeded with a retry-after (provision queue full), Cancelled (shutting down),
  /// and the backend's errors with their messages. A terminal confirmed running less than
  /// `status_ttl` ago is answered at once, else the backend is asked and a dead one is
  /// provisioned again.
  virtual void acquire(const TerminalKey& key, Callback<TerminalInfo> done) = 0;
  /// Activity from HTTP traffic: postpones the idle reaper.
  virtual void touch(const TerminalKey& key) = 0;
  /// A long-lived connection (a WebSocket) to the terminal. A terminal with open connections
  /// is never idle-reaped; its idle time counts from the last close.
  virtual void connection_opened(const TerminalKey& key) = 0;
  virtual void connection_closed(const TerminalKey& key) = 0;
  /// Forgets that the terminal was confirmed running, so the next acquire asks the backend
  /// (the proxy calls this when connecting to the terminal fails).
  virtual void invalidate(const TerminalKey& key) = 0;

  /// Every terminal tracked (running, starting, stopped or failed), sorted by key.
  virtual std::vector<TerminalRow> list() const = 0;

  /// Admin: stops the running terminals matching `filter` and completes with how many it
  /// stopped. Filters: an empty user, policy or context matches any (note that `policy_id`
  /// defaults to "default": set it to "" for any policy); context "default" matches only
  /// default contexts. Terminals whose provision is queued or in flight are not affected. A backend
  /// error fails the whole call with its message, after the other stops have run.
  virtual void stop(const TerminalKey& filter, Callback<std::size_t> done) = 0;
  /// Admin: stops matching terminals (with `only_idle`, only those idle: not running, or with
  /// no connections and no activity for their idle timeout, `refresh_quiet_period` when that is
  /// 0), and with `reset` removes them with their data, so the next acquire provisions fresh.
  /// Completes with how many were stopped or reset.
  virtual void refresh(const TerminalKey& filter, bool only_idle, bool reset, Callback<std::size_t> done) = 0;
  /// Runs one idle sweep now (the reaper runs one every `reaper_interval`); completes with how
  /// many terminals it stopped.
  virtual void reap_idle(Callback<std::size_t> done) = 0;

  /// Graceful shutdown: new acquires fail with Cancelled, queued provisions are cancelled,
  /// provisions and stops in flight finish (nothing is left half-created), the reaper stops;
  /// terminals stay running, to be adopted by the next orchestrator.
  virtual void shutdown(Callback<void> done) = 0;
};

using OrchestratorPtr = std::unique_ptr<Orchestrator>;

}  // namespace terminals
