#pragma once

/// @file policy_store.hpp
/// `PolicyStore`: where policies, their lifecycle (reset schedule) configuration and the
/// per-terminal lifecycle state live. The default is a directory of small JSON files
/// (`open_file_policy_store`); the Kubernetes backend adds a cluster-backed store later.
///
/// Durability of the file store: every write goes to a temporary file, is fsync'ed, renamed
/// over the old file and the directory is fsync'ed, so after a crash (kill -9, power loss) each
/// file holds either the old or the new content, never a part, and a write that returned
/// success survives. Stray temporary files of an interrupted write are removed on open.
///
/// Thread-safe (an internal mutex). Reads are answered from memory; writes block for the fsyncs
/// (a few milliseconds), so a server calls them from its thread pool.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "terminals/export.hpp"
#include "terminals/result.hpp"

namespace terminals {

/// One stored policy. `data` is the policy object as JSON text (already validated by the
/// caller; the store does not interpret it beyond checking it is a JSON object).
struct StoredPolicy {
  std::string id;
  std::string data = "{}";
  std::uint64_t revision = 0;  ///< 1 on create, +1 on every replace
  std::chrono::system_clock::time_point created_at{}, updated_at{};
};

/// Per terminal (user, policy, context): what the reset scheduler remembers.
struct LifecycleState {
  std::string user_id, policy_id, context_id;
  /// When this terminal was first seen under the current schedule text and zone.
  std::chrono::system_clock::time_point first_seen{};
  std::optional<std::chrono::system_clock::time_point> last_applied;
  std::string schedule;  ///< the schedule text first_seen refers to
  std::string timezone;
};

class TERMINALS_API PolicyStore {
 public:
  virtual ~PolicyStore() = default;

  /// Every policy, oldest first (created_at, then id).
  virtual std::vector<StoredPolicy> list() const = 0;
  /// NotFound "Policy '<id>' not found".
  virtual Result<StoredPolicy> get(std::string_view id) const = 0;
  /// Creates; AlreadyExists "Policy '<id>' already exists".
  virtual Result<StoredPolicy> create(std::string_view id, std::string data) = 0;
  /// Creates or fully replaces `data` (created_at kept, updated_at now, revision + 1). With
  /// `expected_revision`, a different current revision (0 = must not exist) is AlreadyExists
  /// (a lost-update guard for clients that read, edit and write back).
  virtual Result<StoredPolicy> put(std::string_view id, std::string data,
                                   std::optional<std::uint64_t> expected_revision = std::nullopt) = 0;
  /// NotFound. The policy's lifecycle configuration stays (as the reference keeps it).
  virtual Status remove(std::string_view id) = 0;

  /// The lifecycle configuration of a policy as JSON text, "{}" when none (the policy need not
  /// exist, "default" included).
  virtual std::string lifecycle(std::string_view policy_id) const = 0;
  /// Replaces it; "{}" clears it.
  virtual Status put_lifecycle(std::string_view policy_id, std::string data) = 0;

  /// Lifecycle state of one terminal; empty when none was stored.
  virtual std::optional<LifecycleState> state(std::string_view user_id, std::string_view policy_id,
                                              std::string_view context_id) const = 0;
  virtual Status put_state(const LifecycleState& state) = 0;
  /// Every stored state (for the scheduler's sweep).
  virtual std::vector<LifecycleState> states() const = 0;
};

using PolicyStorePtr = std::unique_ptr<PolicyStore>;

/// The file-backed store in `dir` (created 0700 if missing): policies/, lifecycle/ and
/// lifecycle-state/ hold one file per item, named by a hash of its id. Fails with Io or
/// InvalidArgument (a corrupt file: its path and the parse error; never silently dropped).
TERMINALS_API Result<PolicyStorePtr> open_file_policy_store(std::string dir);

/// An append-only audit log: one JSON object per line, `{"time": ISO-8601 UTC, "action": ...,
/// ...fields}`. Each record is one write() on an O_APPEND descriptor, so concurrent writers never
/// interleave inside a line. Values are JSON-escaped; secrets must not be passed in.
class TERMINALS_API AuditLog {
 public:
  /// Opens (creating 0600) the file at `path`.
  static Result<std::unique_ptr<AuditLog>> open(std::string path);
  virtual ~AuditLog() = default;
  /// Appends {"time", "action", fields...}. `fields` are name/value string pairs.
  virtual Status record(std::string_view action,
                        const std::vector<std::pair<std::string, std::string>>& fields) = 0;
  virtual const std::string& path() const = 0;
};

}  // namespace terminals
