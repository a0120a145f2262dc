// The orchestrator: per-key state machine (one operation at a time per key, requests wait on
// it), a provision queue behind a concurrency limit, activity clocks and the idle reaper.

#include "terminals/orchestrator.hpp"

#include <algorithm>
#include <cmath>
#include <deque>
#include <map>
#include <tuple>
#include <utility>

#include "terminals/log.hpp"
#include "terminals/loop.hpp"

namespace terminals {

namespace {

constexpr const char* kRetryAfter = "retry after ";
// Ids are hashed by backends, but each tracked key is kept in memory: bound them.
constexpr std::size_t kMaxIdBytes = 1024;

}  // namespace

std::optional<std::uint32_t> retry_after_seconds(const Error& error) {
  if (error.code != Errc::LimitExceeded) return std::nullopt;
  auto at = error.message.rfind(kRetryAfter);
  if (at == std::string::npos) return std::nullopt;
  std::uint64_t value = 0;
  std::size_t i = at + std::char_traits<char>::length(kRetryAfter), digits = 0;
  for (; i < error.message.size() && error.message[i] >= '0' && error.message[i] <= '9' && digits < 9; ++i, ++digits) {
    value = value * 10 + static_cast<std::uint64_t>(error.message[i] - '0');
  }
  if (digits == 0) return std::nullopt;
  return static_cast<std::uint32_t>(std::max<std::uint64_t>(value, 1));
}

namespace detail {
namespace {

using SteadyClock = std::chrono::steady_clock;
using Id = std::tuple<std::string, std::string, std::string>;  // user, policy, context

Id id_of(const TerminalKey& key) {
  return {key.user_id, key.policy_id.empty() ? std::string("default") : key.policy_id,
          key.context_id == "default" ? std::string() : key.context_id};
}

TerminalKey key_of(const Id& id) { return {std::get<0>(id), std::get<1>(id), std::get<2>(id)}; }

bool matches(const TerminalKey& filter, const TerminalKey& key) {
  if (!filter.user_id.empty() && filter.user_id != key.user_id) return false;
  if (!filter.policy_id.empty() && filter.policy_id != key.policy_id) return false;
  if (filter.context_id == "default") return key.context_id.empty();
  return filter.context_id.empty() || filter.context_id == key.context_id;
}

class OrchestratorImpl final : public Orchestrator {
 public:
  OrchestratorImpl(Loop& loop, Backend& backend, SpecResolver resolver, OrchestratorOptions options)
      : loop_(loop), backend_(backend), resolver_(std::move(resolver)), options_(std::move(options)) {
    reaper_ = loop_.create_timer([this] { reap_idle([](Result<std::size_t>) {}); });
    auto interval = std::chrono::duration_cast<std::chrono::milliseconds>(options_.reaper_interval);
    reaper_->start(interval, interval);
  }

  ~OrchestratorImpl() override {
    alive_.reset();
    reaper_.reset();
    Error cancelled(Errc::Cancelled, "the orchestrator was destroyed");
    for (auto& [id, e] : entries_) {
      for (auto& w : e->waiters) later(std::move(w), Result<TerminalInfo>(cancelled));
    }
    for (auto& [key, done] : waiting_for_start_) later(std::move(done), Result<TerminalInfo>(cancelled));
    if (start_done_) later(std::move(start_done_), Status(cancelled));
    for (auto& [n, b] : batches_) later(std::move(b.done), Result<std::size_t>(cancelled));
    for (auto& d : shutdown_waiters_) later(std::move(d), Status(cancelled));
  }

  void start(Callback<void> done) override {
    if (started_ || start_done_) {
      return later(std::move(done), Status(Error(Errc::InvalidArgument, "the orchestrator was already started")));
    }
    if (shutting_down_) return later(std::move(done), Status(Error(Errc::Cancelled, "the orchestrator is shutting down")));
    start_done_ = std::move(done);
    std::weak_ptr<bool> alive = alive_;
    backend_.list([this, alive](Result<std::vector<TerminalInfo>> listed) {
      if (!alive.lock()) return;
      adopt(std::move(listed));
    });
  }

  void acquire(const TerminalKey& key, Callback<TerminalInfo> done) override {
    if (shutting_down_) {
      return later(std::move(done), Result<TerminalInfo>(Error(Errc::Cancelled, "the orchestrator is shutting down")));
    }
    if (key.user_id.empty()) {
      return later(std::move(done), Result<TerminalInfo>(Error(Errc::InvalidArgument, "a terminal needs a user id")));
    }
    if (key.user_id.size() > kMaxIdBytes || key.policy_id.size() > kMaxIdBytes || key.context_id.size() > kMaxIdBytes) {
      return later(std::move(done), Result<TerminalInfo>(Error(Errc::InvalidArgument,
          "user, policy and context ids are limited to " + std::to_string(kMaxIdBytes) + " bytes")));
    }
    if (start_done_) {  // adoption in progress: provisioning now could start a terminal twice
      waiting_for_start_.emplace_back(key, std::move(done));
      return;
    }
    Entry& e = entry_for(id_of(key));
    e.last_activity = now();
    switch (e.op) {
      case Op::Queued:
      case Op::Provisioning:
      case Op::Checking:
      case Op::Stopping:  // provisioned again once stopped
        e.waiters.push_back(std::move(done));
        return;
      case Op::None:
        break;
    }
    if (e.state == TerminalState::Running) {
      auto ttl = options_.status_ttl;
      if (e.confirmed_at && ttl.count() > 0 && SteadyClock::now() - *e.confirmed_at < ttl) {
        return later(std::move(done), Result<TerminalInfo>(e.info));
      }
      e.waiters.push_back(std::move(done));
      return begin_check(e);
    }
    e.waiters.push_back(std::move(done));
    begin_provision(e);
  }

  void touch(const TerminalKey& key) override {
    if (Entry* e = find(id_of(key))) e->last_activity = now();
  }

  void connection_opened(const TerminalKey& key) override {
    if (key.user_id.empty() || key.user_id.size() > kMaxIdBytes || key.policy_id.size() > kMaxIdBytes ||
        key.context_id.size() > kMaxIdBytes) {
      return;
    }
    Entry& e = entry_for(id_of(key));
    e.open_connections++;
    e.last_activity = now();
  }

  void connection_closed(const TerminalKey& key) override {
    Entry* e = find(id_of(key));
    if (!e) return;
    if (e->open_connections > 0) e->open_connections--;
    e->last_activity = now();  // idle time counts from the last close
    maybe_forget(*e);
  }

  void invalidate(const TerminalKey& key) override {
    if (Entry* e = find(id_of(key))) e->confirmed_at.reset();
  }

  std::vector<TerminalRow> list() const override {
    std::vector<TerminalRow> rows;
    rows.reserve(entries_.size());
    auto steady_now = now();
    auto wall_now = std::chrono::system_clock::now();
    for (const auto& [id, e] : entries_) {
      TerminalRow row;
      row.key = e->key;
      row.name = e->name;
      row.state = e->state;
      row.reason = e->reason;
      if (e->op == Op::Provisioning) {
        if (auto p = backend_.progress(e->name); !p.empty()) row.reason = std::move(p);
      }
      row.created_at = e->info.created_at;
      row.last_activity = wall_now - std::chrono::duration_cast<std::chrono::system_clock::duration>(
                                         steady_now - e->last_activity);
      row.open_connections = e->open_connections;
      rows.push_back(std::move(row));
    }
    return rows;
  }

  void stop(const TerminalKey& filter, Callback<std::size_t> done) override {
    std::uint64_t batch = new_batch(std::move(done));
    for (auto& [id, e] : entries_) {
      if (e->op != Op::None || e->state != TerminalState::Running || !matches(filter, e->key)) continue;
      begin_stop(*e, false, batch, "stopped by an administrator");
    }
    arm(batch);
  }

  void refresh(const TerminalKey& filter, bool only_idle, bool reset, Callback<std::size_t> done) override {
    std::uint64_t batch = new_batch(std::move(done));
    std::vector<Entry*> chosen;
    for (auto& [id, e] : entries_) {
      if (e->op != Op::None || !matches(filter, e->key)) continue;
      bool running = e->state == TerminalState::Running;
      if (!running && !(reset && e->known)) continue;  // nothing to stop, nothing to reset
      if (only_idle && running && !is_idle(*e, true)) continue;
      chosen.push_back(e.get());
    }
    // begin_stop may forget entries only in its (later) completion, so the pointers hold here.
    for (Entry* e : chosen) begin_stop(*e, reset, batch, reset ? "reset by an administrator" : "refreshed by an administrator");
    arm(batch);
  }

  void reap_idle(Callback<std::size_t> done) override {
    std::uint64_t batch = new_batch(std::move(done));
    if (!shutting_down_) {
      for (auto& [id, e] : entries_) {
        if (e->op != Op::None || e->state != TerminalState::Running || !is_idle(*e, false)) continue;
        auto idle = std::chrono::duration_cast<std::chrono::minutes>(now() - e->last_activity);
        log(LogLevel::Info, "orchestrator",
            "stopping idle terminal " + e->name + " (no activity for " + std::to_string(idle.count()) + " min)");
        begin_stop(*e, false, batch, "stopped after " + std::to_string(idle.count()) + " minutes without activity");
      }
    }
    arm(batch);
  }

  void shutdown(Callback<void> done) override {
    shutting_down_ = true;
    if (reaper_) reaper_->stop();
    Error cancelled(Errc::Cancelled, "the orchestrator is shutting down");
    for (auto& [key, d] : waiting_for_start_) later(std::move(d), Result<TerminalInfo>(cancelled));
    waiting_for_start_.clear();
    // Queued provisions never reached the backend: nothing to wait for.
    auto queued = std::move(queue_);
    queue_.clear();
    for (const Id& id : queued) {
      Entry* e = find(id);
      if (!e || e->op != Op::Queued) continue;
      e->op = Op::None;
      e->state = TerminalState::Stopped;
      e->reason = "not started: the orchestrator shut down";
      fail_waiters(*e, cancelled);
      maybe_forget(*e);
    }
    shutdown_waiters_.push_back(std::move(done));
    check_shutdown();
  }

 private:
  enum class Op { None, Queued, Provisioning, Checking, Stopping };

  struct Entry {
    Id id;
    TerminalKey key;
    std::string name;
    TerminalState state = TerminalState::Stopped;
    std::string reason;
    TerminalInfo info;  // the backend's last word: endpoint, key, created_at
    bool known = false;  // the backend has (or had) it: provisioned, adopted or failed trying
    Op op = Op::None;
    std::uint64_t op_id = 0;
    std::vector<Callback<TerminalInfo>> waiters;
    SteadyClock::time_point last_activity{};
    std::optional<SteadyClock::time_point> confirmed_at;  // real clock: for status_ttl
    std::size_t open_connections = 0;
    std::optional<std::chrono::minutes> idle_timeout;
    TerminalSpec spec;  // resolved when provisioning was asked for
  };

  struct Batch {
    Callback<std::size_t> done;
    std::size_t pending = 0, affected = 0, failed = 0;
    std::optional<Error> error;
    bool armed = false;
  };

  template <class T>
  void later(Callback<T> done, Result<T> result) {
    loop_.defer([d = std::move(done), r = std::move(result)]() mutable { d(std::move(r)); });
  }

  SteadyClock::time_point now() const { return options_.clock ? options_.clock() : SteadyClock::now(); }

  Entry* find(const Id& id) {
    auto it = entries_.find(id);
    return it == entries_.end() ? nullptr : it->second.get();
  }

  Entry& entry_for(const Id& id) {
    auto& slot = entries_[id];
    if (!slot) {
      slot = std::make_unique<Entry>();
      slot->id = id;
      slot->key = key_of(id);
      slot->name = backend_.terminal_name(slot->key.user_id, slot->key.policy_id, slot->key.context_id);
      slot->last_activity = now();
    }
    return *slot;
  }

  // Entries the backend never heard of and nobody refers to are dropped, so failed or
  // refused requests (unknown policy, full queue) leave nothing behind.
  void maybe_forget(Entry& e) {
    if (e.known || e.op != Op::None || !e.waiters.empty() || e.open_connections > 0) return;
    entries_.erase(e.id);
  }

  void fail_waiters(Entry& e, const Error& error) {
    for (auto& w : e.waiters) later(std::move(w), Result<TerminalInfo>(error));
    e.waiters.clear();
  }

  void answer_waiters(Entry& e) {
    for (auto& w : e.waiters) later(std::move(w), Result<TerminalInfo>(e.info));
    e.waiters.clear();
  }

  bool is_idle(const Entry& e, bool for_refresh) const {
    if (e.open_connections > 0) return false;
    std::chrono::minutes timeout = e.idle_timeout.value_or(options_.default_idle_timeout);
    if (timeout.count() <= 0) {
      if (!for_refresh) return false;
      timeout = options_.refresh_quiet_period;
    }
    return now() - e.last_activity >= timeout;
  }

  // --- provisioning -------------------------------------------------------------------------

  void begin_provision(Entry& e) {
    if (shutting_down_) {
      fail_waiters(e, Error(Errc::Cancelled, "the orchestrator is shutting down"));
      return maybe_forget(e);
    }
    auto spec = resolver_(e.key);
    if (!spec) {
      fail_waiters(e, spec.error());
      return maybe_forget(e);
    }
    spec->user_id = e.key.user_id;
    spec->policy_id = e.key.policy_id;
    spec->context_id = e.key.context_id;
    e.spec = std::move(spec).value();
    e.idle_timeout = e.spec.idle_timeout;
    if (in_flight_ < options_.max_concurrent_provisions) return run_provision(e);
    if (queue_.size() >= options_.max_queued_provisions) {
      std::uint32_t retry = retry_after();
      fail_waiters(e, Error(Errc::LimitExceeded, "too many terminals are starting (" + std::to_string(queue_.size()) +
                                                     " waiting); " + kRetryAfter + std::to_string(retry) + " seconds"));
      return maybe_forget(e);
    }
    e.op = Op::Queued;
    e.state = TerminalState::Provisioning;
    e.reason = "waiting for a provisioning slot";
    queue_.push_back(e.id);
  }

  std::uint32_t retry_after() const {
    // The queue drains max_concurrent at a time, each wave taking about one provision.
    double waves = static_cast<double>(queue_.size()) / static_cast<double>(options_.max_concurrent_provisions) + 1.0;
    double seconds = std::ceil(average_provision_ms_ * waves / 1000.0);
    return static_cast<std::uint32_t>(std::clamp(seconds, 1.0, 300.0));
  }

  void run_provision(Entry& e) {
    e.op = Op::Provisioning;
    e.state = TerminalState::Provisioning;
    e.reason.clear();
    std::uint64_t op_id = ++e.op_id;
    ++in_flight_;
    auto started = SteadyClock::now();
    std::weak_ptr<bool> alive = alive_;
    backend_.provision(e.spec, [this, alive, id = e.id, op_id, started](Result<TerminalInfo> r) {
      if (!alive.lock()) return;
      provisioned(id, op_id, started, std::move(r));
    });
  }

  void provisioned(const Id& id, std::uint64_t op_id, SteadyClock::time_point started, Result<TerminalInfo> r) {
    --in_flight_;
    double ms = std::chrono::duration<double, std::milli>(SteadyClock::now() - started).count();
    average_provision_ms_ = 0.8 * average_provision_ms_ + 0.2 * ms;
    Entry* e = find(id);
    if (e && e->op == Op::Provisioning && e->op_id == op_id) {
      e->op = Op::None;
      e->known = true;
      if (r && r->state == TerminalState::Running) {
        e->info = std::move(r).value();
        e->state = TerminalState::Running;
        e->reason = e->info.reason;
        e->confirmed_at = SteadyClock::now();
        e->last_activity = now();
        event("provisioned", *e, e->name);
        answer_waiters(*e);
      } else {
        Error error = r ? Error(Errc::Internal, "the backend reported terminal " + e->name + " as " +
                                                   terminal_state_name(r->state) + " after provisioning")
                        : std::move(r).error();
        e->state = TerminalState::Error;
        e->reason = error.message;
        e->confirmed_at.reset();
        log(LogLevel::Warning, "orchestrator", "provisioning terminal " + e->name + " failed: " + error.message);
        event("provision_failed", *e, error.message);
        fail_waiters(*e, error);
      }
    }
    pump_queue();
    check_shutdown();
  }

  template <class E>
  void event(std::string_view what, const E& e, std::string_view detail) {
    if (options_.on_event) options_.on_event(what, e.key, detail);
  }

  void pump_queue() {
    while (in_flight_ < options_.max_concurrent_provisions && !queue_.empty()) {
      Id id = std::move(queue_.front());
      queue_.pop_front();
      Entry* e = find(id);
      if (e && e->op == Op::Queued) run_provision(*e);
    }
  }

  // --- status check -------------------------------------------------------------------------

  void begin_check(Entry& e) {
    e.op = Op::Checking;
    std::uint64_t op_id = ++e.op_id;
    std::weak_ptr<bool> alive = alive_;
    backend_.inspect(e.name, [this, alive, id = e.id, op_id](Result<TerminalInfo> r) {
      if (!alive.lock()) return;
      checked(id, op_id, std::move(r));
    });
  }

  void checked(const Id& id, std::uint64_t op_id, Result<TerminalInfo> r) {
    Entry* e = find(id);
    if (e && e->op == Op::Checking && e->op_id == op_id) {
      e->op = Op::None;
      if (r && r->state == TerminalState::Running) {
        e->info = std::move(r).value();
        e->reason = e->info.reason;
        e->confirmed_at = SteadyClock::now();
        answer_waiters(*e);
      } else if (r || r.error().code == Errc::NotFound) {
        // Died or vanished behind our back: provision it again for those waiting.
        e->state = r ? r->state : TerminalState::Stopped;
        e->reason = r ? r->reason : "the backend no longer has it";
        e->confirmed_at.reset();
        log(LogLevel::Info, "orchestrator", "terminal " + e->name + " is no longer running (" + e->reason +
                                                "); provisioning it again");
        begin_provision(*e);
      } else {
        fail_waiters(*e, r.error());
      }
    }
    check_shutdown();
  }

  // --- stopping -----------------------------------------------------------------------------

  std::uint64_t new_batch(Callback<std::size_t> done) {
    std::uint64_t n = ++batch_counter_;
    batches_[n].done = std::move(done);
    return n;
  }

  void arm(std::uint64_t n) {
    batches_[n].armed = true;
    settle(n);
  }

  void settle(std::uint64_t n) {
    auto it = batches_.find(n);
    if (it == batches_.end() || !it->second.armed || it->second.pending > 0) return;
    Batch b = std::move(it->second);
    batches_.erase(it);
    if (b.error) {
      Error error = *b.error;
      error.message = std::to_string(b.failed) + " of " + std::to_string(b.failed + b.affected) +
                      " terminals failed to stop; first: " + error.message;
      later(std::move(b.done), Result<std::size_t>(std::move(error)));
    } else {
      later(std::move(b.done), Result<std::size_t>(b.affected));
    }
  }

  void begin_stop(Entry& e, bool reset, std::uint64_t batch, std::string why) {
    e.op = Op::Stopping;
    e.state = TerminalState::Stopping;
    e.confirmed_at.reset();
    std::uint64_t op_id = ++e.op_id;
    batches_[batch].pending++;
    std::weak_ptr<bool> alive = alive_;
    auto finished = [this, alive, id = e.id, op_id, reset, batch, why = std::move(why)](Status s) {
      if (!alive.lock()) return;
      stopped(id, op_id, reset, batch, why, std::move(s));
    };
    if (reset) {
      backend_.remove(e.name, true, std::move(finished));
    } else {
      backend_.stop(e.name, std::move(finished));
    }
  }

  void stopped(const Id& id, std::uint64_t op_id, bool reset, std::uint64_t batch, const std::string& why, Status s) {
    auto& b = batches_[batch];
    b.pending--;
    bool ok = s || s.error().code == Errc::NotFound;  // already gone counts as stopped
    if (ok) {
      b.affected++;
    } else {
      b.failed++;
      if (!b.error) b.error = s.error();
    }
    Entry* e = find(id);
    if (e && e->op == Op::Stopping && e->op_id == op_id) {
      e->op = Op::None;
      if (ok) {
        e->state = TerminalState::Stopped;
        e->reason = why;
        if (reset) e->known = false;  // the backend forgot it: so may we
        event(reset ? "reset" : "stopped", *e, why);
      } else {
        e->state = TerminalState::Error;
        e->reason = "stopping failed: " + s.error().message;
        log(LogLevel::Warning, "orchestrator", "stopping terminal " + e->name + " failed: " + s.error().message);
        event("stop_failed", *e, s.error().message);
      }
      if (!e->waiters.empty()) {
        begin_provision(*e);  // acquired while stopping
      } else {
        maybe_forget(*e);
      }
    }
    settle(batch);
    check_shutdown();
  }

  // --- adoption and shutdown ----------------------------------------------------------------

  void adopt(Result<std::vector<TerminalInfo>> listed) {
    Status status;
    if (listed) {
      std::size_t running = 0;
      for (auto& info : *listed) {
        if (info.user_id.empty()) continue;
        Entry& e = entry_for(id_of({info.user_id, info.policy_id, info.context_id}));
        if (e.op != Op::None) continue;
        e.known = true;
        e.state = info.state;
        e.reason = info.reason;
        e.info = std::move(info);
        e.confirmed_at.reset();  // the first acquire asks the backend
        if (e.state == TerminalState::Running) {
          ++running;
          e.last_activity = now();
          // The policy as it is now, so adopted terminals keep their idle timeout.
          auto spec = resolver_(e.key);
          e.idle_timeout = spec ? spec->idle_timeout : std::nullopt;
        }
      }
      log(LogLevel::Info, "orchestrator", "adopted " + std::to_string(running) + " running terminals (" +
                                              std::to_string(listed->size()) + " known to the " +
                                              std::string(backend_.kind()) + " backend)");
    } else if (listed.error().code == Errc::BackendUnavailable) {
      // The engine is down: serve anyway. Requests get 503 with the reason until it is back,
      // and each terminal is adopted by name when its user first comes back.
      log(LogLevel::Warning, "orchestrator", "could not list running terminals: " + listed.error().message +
                                                 "; they are adopted one by one once the backend answers");
    } else {
      status = std::move(listed).error();
    }
    started_ = true;
    auto done = std::move(start_done_);
    start_done_ = nullptr;
    auto waiting = std::move(waiting_for_start_);
    waiting_for_start_.clear();
    for (auto& [key, d] : waiting) acquire(key, std::move(d));
    done(std::move(status));
  }

  void check_shutdown() {
    if (!shutting_down_ || shutdown_waiters_.empty() || in_flight_ > 0) return;
    for (const auto& [id, e] : entries_) {
      if (e->op == Op::Checking || e->op == Op::Stopping || e->op == Op::Provisioning) return;
    }
    for (auto& d : shutdown_waiters_) later(std::move(d), Status());
    shutdown_waiters_.clear();
  }

  Loop& loop_;
  Backend& backend_;
  SpecResolver resolver_;
  OrchestratorOptions options_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  std::unique_ptr<Timer> reaper_;
  std::map<Id, std::unique_ptr<Entry>> entries_;
  std::deque<Id> queue_;
  std::size_t in_flight_ = 0;
  double average_provision_ms_ = 1000.0;
  std::map<std::uint64_t, Batch> batches_;
  std::uint64_t batch_counter_ = 0;
  bool started_ = false;
  Callback<void> start_done_;
  std::vector<std::pair<TerminalKey, Callback<TerminalInfo>>> waiting_for_start_;
  bool shutting_down_ = false;
  std::vector<Callback<void>> shutdown_waiters_;
};

}  // namespace
}  // namespace detail

Result<std::unique_ptr<Orchestrator>> Orchestrator::create(Loop& loop, Backend& backend, SpecResolver resolver,
                                                           OrchestratorOptions options) {
  if (!resolver) return Error(Errc::InvalidArgument, "the orchestrator needs a spec resolver");
  if (options.max_concurrent_provisions == 0) {
    return Error(Errc::InvalidArgument, "max_concurrent_provisions must be at least 1");
  }
  if (options.reaper_interval.count() <= 0) return Error(Errc::InvalidArgument, "reaper_interval must be positive");
  return std::unique_ptr<Orchestrator>(
      std::make_unique<detail::OrchestratorImpl>(loop, backend, std::move(resolver), std::move(options)));
}

}  // namespace terminals
