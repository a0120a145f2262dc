#pragma once

// ResetScheduler: applies policies' scheduled resets (PUT /api/v1/policies/{id}/lifecycle).
// Every `interval` it looks at each terminal the orchestrator knows; when the schedule of its
// policy fired since the terminal was first seen under that schedule, or since its last reset,
// the terminal is stopped and removed with its data, so the next request starts it fresh.
//
// The state per terminal (first seen, last applied) is persisted in the PolicyStore, so a
// restart neither skips a firing that happened while the service was down nor repeats one that
// was applied (reset_due in schedule.hpp). Several firings missed while down give one reset.

#include <chrono>
#include <memory>
#include <set>
#include <string>

#include "terminals/loop.hpp"
#include "terminals/orchestrator.hpp"
#include "terminals/policy_store.hpp"

namespace terminals::detail {

class PolicyApi;

class ResetScheduler {
 public:
  ResetScheduler(Loop& loop, Orchestrator& orchestrator, PolicyApi& policies, std::shared_ptr<PolicyStore> store,
                 std::shared_ptr<AuditLog> audit, std::chrono::milliseconds interval);
  ~ResetScheduler();

  /// Sweeps every `interval` from now on.
  void start();
  /// One sweep now (the timer calls it; tests too). Resets run asynchronously.
  void sweep();
  /// Resets applied since start (for tests and status).
  std::size_t resets_applied() const noexcept { return applied_; }

 private:
  void persist(LifecycleState state);

  Loop& loop_;
  Orchestrator& orchestrator_;
  PolicyApi& policies_;
  std::shared_ptr<PolicyStore> store_;
  std::shared_ptr<AuditLog> audit_;
  std::chrono::milliseconds interval_;
  std::unique_ptr<Timer> timer_;
  std::set<std::string> in_flight_;  // keys being reset
  std::size_t applied_ = 0;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace terminals::detail
