// ResetScheduler: scheduled resets of terminals (see reset_scheduler.hpp).

#include "service/reset_scheduler.hpp"

#include <map>

#include "service/policy_api.hpp"
#include "terminals/log.hpp"
#include "terminals/schedule.hpp"
#include "uv/work.hpp"

namespace terminals::detail {

ResetScheduler::ResetScheduler(Loop& loop, Orchestrator& orchestrator, PolicyApi& policies,
                               std::shared_ptr<PolicyStore> store, std::shared_ptr<AuditLog> audit,
                               std::chrono::milliseconds interval)
    : loop_(loop),
      orchestrator_(orchestrator),
      policies_(policies),
      store_(std::move(store)),
      audit_(std::move(audit)),
      interval_(interval) {}

ResetScheduler::~ResetScheduler() { *alive_ = false; }

void ResetScheduler::start() {
  timer_ = loop_.create_timer([this] { sweep(); });
  timer_->start(interval_, interval_);
}

void ResetScheduler::persist(LifecycleState state) {
  // The store fsyncs: off the loop.
  queue_blocking(
      loop_,
      [store = store_, state = std::move(state)] {
        if (auto s = store->put_state(state); !s) {
          log(LogLevel::Error, "lifecycle", "cannot save the reset state of " + state.user_id + ": " + s.error().message);
        }
      },
      [] {});
}

void ResetScheduler::sweep() {
  auto now = std::chrono::system_clock::now();
  // Each policy's schedule once per sweep, not once per terminal: parsing it reads the zone's
  // tzdata file.
  std::map<std::string, Result<std::optional<Schedule>>> schedules;
  for (const auto& row : orchestrator_.list()) {
    const TerminalKey& key = row.key;
    std::string id = key.user_id + '\n' + key.policy_id + '\n' + key.context_id;
    if (in_flight_.count(id)) continue;
    std::string policy = key.policy_id.empty() ? "default" : key.policy_id;
    auto cached = schedules.find(policy);
    if (cached == schedules.end()) cached = schedules.emplace(policy, policies_.schedule_for(policy)).first;
    const auto& schedule = cached->second;
    if (!schedule) {
      log(LogLevel::Warning, "lifecycle", "policy '" + key.policy_id + "': " + schedule.error().message);
      continue;
    }
    if (!*schedule) continue;
    const Schedule& s = **schedule;
    auto state = store_->state(key.user_id, key.policy_id, key.context_id);
    if (!state || state->schedule != s.text() || state->timezone != s.time_zone().name()) {
      // First sight under this schedule: it applies from now on (a past one-shot does not
      // reset a terminal that did not exist then).
      LifecycleState fresh;
      fresh.user_id = key.user_id;
      fresh.policy_id = key.policy_id;
      fresh.context_id = key.context_id;
      fresh.first_seen = now;
      fresh.schedule = s.text();
      fresh.timezone = s.time_zone().name();
      persist(fresh);
      continue;
    }
    if (!reset_due(s, state->last_applied, state->first_seen, now)) continue;
    in_flight_.insert(id);
    log(LogLevel::Info, "lifecycle", "scheduled reset (" + s.text() + ") of terminal " + row.name);
    TerminalKey filter{key.user_id, key.policy_id.empty() ? "default" : key.policy_id,
                       key.context_id.empty() ? std::string("default") : key.context_id};
    orchestrator_.refresh(filter, false, true,
                          [this, alive = std::weak_ptr<bool>(alive_), id, st = *state, name = row.name](Result<std::size_t> r) mutable {
                            if (!alive.lock()) return;
                            in_flight_.erase(id);
                            if (!r || *r == 0) {
                              // Failed, or the terminal was busy (starting, stopping): the next
                              // sweep tries again.
                              if (!r) log(LogLevel::Warning, "lifecycle", "reset of " + name + " failed: " + r.error().message);
                              return;
                            }
                            ++applied_;
                            st.last_applied = std::chrono::system_clock::now();
                            persist(st);
                            if (audit_) {
                              (void)audit_->record("lifecycle.reset", {{"actor", "schedule"}, {"user_id", st.user_id},
                                                                      {"policy_id", st.policy_id},
                                                                      {"context_id", st.context_id},
                                                                      {"schedule", st.schedule}});
                            }
                          });
  }
}

}  // namespace terminals::detail
