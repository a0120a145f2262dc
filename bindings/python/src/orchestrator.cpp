// _Orchestrator: terminals::Orchestrator over a LocalBackend on a LoopThread. The Python class
// terminals.Orchestrator wraps it (and runs the event dispatcher thread).
#include <pybind11/stl.h>

#include <condition_variable>
#include <deque>
#include <tuple>

#include "common.hpp"
#include "policy_store_handle.hpp"
#include "terminals/local_backend.hpp"
#include "terminals/orchestrator.hpp"
#include "terminals/policy.hpp"

namespace terminals::python {
namespace {

/// Events from the loop thread, waiting for the Python dispatcher thread. The loop thread only
/// pushes C++ strings here; Python callbacks run on the dispatcher, holding the GIL.
class EventQueue {
 public:
  using Event = std::tuple<std::string, std::string, std::string, std::string, std::string>;

  void push(Event e) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_) return;
    events_.push_back(std::move(e));
    cv_.notify_one();
  }
  void close() {
    std::lock_guard<std::mutex> lock(mutex_);
    closed_ = true;
    cv_.notify_all();
  }
  /// The next event, or none once closed and drained (the GIL released while waiting).
  std::optional<Event> next() {
    ReleaseGil nogil;
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait(lock, [this] { return closed_ || !events_.empty(); });
    if (events_.empty()) return std::nullopt;
    Event e = std::move(events_.front());
    events_.pop_front();
    return e;
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Event> events_;
  bool closed_ = false;
};

py::dict info_dict(const TerminalInfo& t) {
  py::dict d;
  d["name"] = t.name;
  d["user_id"] = t.user_id;
  d["policy_id"] = t.policy_id;
  d["context_id"] = t.context_id;
  d["state"] = terminal_state_name(t.state);
  d["reason"] = t.reason;
  d["endpoint"] = t.endpoint.to_string();
  d["api_key"] = t.api_key;
  d["created_at"] = epoch_seconds(t.created_at);
  return d;
}

py::dict row_dict(const TerminalRow& r) {
  py::dict d;
  d["name"] = r.name;
  d["user_id"] = r.key.user_id;
  d["policy_id"] = r.key.policy_id;
  d["context_id"] = r.key.context_id;
  d["state"] = terminal_state_name(r.state);
  d["reason"] = r.reason;
  d["created_at"] = epoch_seconds(r.created_at);
  d["last_activity"] = epoch_seconds(r.last_activity);
  d["open_connections"] = r.open_connections;
  return d;
}

class OrchestratorHandle {
 public:
  OrchestratorHandle(const std::string& data_dir, const std::string& isolation, const std::string& agent_path,
                     std::size_t max_concurrent_provisions, std::size_t max_queued_provisions,
                     double idle_timeout_minutes, std::shared_ptr<PolicyStoreHandle> policies, bool events,
                     const std::string& image) {
    LocalBackendOptions bo;
    bo.data_dir = data_dir;
    bo.agent_path = agent_path;
    if (!isolation.empty()) bo.default_isolation = unwrap(parse_isolation(isolation));
    OrchestratorOptions oo;
    if (max_concurrent_provisions == 0) raise(Error(Errc::InvalidArgument, "max_concurrent_provisions must be at least 1"));
    oo.max_concurrent_provisions = max_concurrent_provisions;
    oo.max_queued_provisions = max_queued_provisions;
    oo.default_idle_timeout = std::chrono::minutes(static_cast<long long>(idle_timeout_minutes));
    if (events) {
      auto queue = events_;
      oo.on_event = [queue](std::string_view event, const TerminalKey& key, std::string_view detail) {
        queue->push({std::string(event), key.user_id, key.policy_id, key.context_id, std::string(detail)});
      };
    }
    // Policies as the service resolves them: a stored policy, else "default" with no limits.
    SpecResolver resolver = [policies, image](const TerminalKey& key) -> Result<TerminalSpec> {
      std::string policy = key.policy_id.empty() ? "default" : key.policy_id;
      if (policies) {
        auto store = policies->get();
        if (!store) return Error(Errc::Cancelled, "the policy store is closed");
        auto stored = store->get(policy);
        if (stored) {
          auto parsed = parse_policy(stored->data, policies->caps());
          if (!parsed) return std::move(parsed).error();
          return policy_spec(*parsed, policies->caps(), image);
        }
      }
      if (policy == "default") return TerminalSpec{};
      return Error(Errc::NotFound, "Policy '" + policy + "' not found");
    };

    thread_ = std::make_unique<LoopThread>();
    auto* self = this;
    Status s = thread_->call<Status>([self, bo = std::move(bo), oo = std::move(oo), resolver = std::move(resolver)](
                                         std::shared_ptr<std::promise<Status>> p) mutable {
      auto backend = LocalBackend::create(self->thread_->loop(), std::move(bo));
      if (!backend) return p->set_value(std::move(backend).error());
      self->backend_ = std::move(backend).value();
      auto orch = Orchestrator::create(self->thread_->loop(), *self->backend_, std::move(resolver), std::move(oo));
      if (!orch) return p->set_value(std::move(orch).error());
      self->orch_ = std::move(orch).value();
      self->orch_->start([p](Status st) { p->set_value(std::move(st)); });
    });
    if (!s) {
      close();
      raise(std::move(s).error());
    }
  }

  ~OrchestratorHandle() { close(); }

  py::dict acquire(const std::string& user, const std::string& policy, const std::string& context) {
    auto* self = this;
    TerminalKey key{user, policy, context};
    auto r = thread_->call<Result<TerminalInfo>>([self, key](std::shared_ptr<std::promise<Result<TerminalInfo>>> p) {
      if (!self->orch_) return p->set_value(Error(Errc::Cancelled, "the orchestrator is closed"));
      self->orch_->acquire(key, [p](Result<TerminalInfo> got) { p->set_value(std::move(got)); });
    });
    return info_dict(unwrap(std::move(r)));
  }

  py::list list() {
    auto* self = this;
    auto rows = thread_->run([self]() -> Result<std::vector<TerminalRow>> {
      if (!self->orch_) return Error(Errc::Cancelled, "the orchestrator is closed");
      return self->orch_->list();
    });
    py::list out;
    for (const auto& r : unwrap(std::move(rows))) out.append(row_dict(r));
    return out;
  }

  std::size_t stop(const std::string& user, const std::string& policy, const std::string& context) {
    auto* self = this;
    TerminalKey filter{user, policy, context};
    return unwrap(thread_->call<Result<std::size_t>>([self, filter](std::shared_ptr<std::promise<Result<std::size_t>>> p) {
      if (!self->orch_) return p->set_value(Error(Errc::Cancelled, "the orchestrator is closed"));
      self->orch_->stop(filter, [p](Result<std::size_t> r) { p->set_value(std::move(r)); });
    }));
  }

  std::size_t refresh(const std::string& user, const std::string& policy, const std::string& context, bool only_idle,
                      bool reset) {
    auto* self = this;
    TerminalKey filter{user, policy, context};
    return unwrap(thread_->call<Result<std::size_t>>(
        [self, filter, only_idle, reset](std::shared_ptr<std::promise<Result<std::size_t>>> p) {
          if (!self->orch_) return p->set_value(Error(Errc::Cancelled, "the orchestrator is closed"));
          self->orch_->refresh(filter, only_idle, reset, [p](Result<std::size_t> r) { p->set_value(std::move(r)); });
        }));
  }

  /// Graceful shutdown (terminals keep running), then the loop thread goes; idempotent.
  void close() {
    ReleaseGil nogil;
    std::lock_guard<std::mutex> closing(close_mutex_);  // a second caller waits for the first
    if (closed_) return;
    if (thread_) {
      auto* self = this;
      try {
        (void)thread_->call<Status>([self](std::shared_ptr<std::promise<Status>> p) {
          if (!self->orch_) {
            self->backend_.reset();
            return p->set_value(Status{});
          }
          self->orch_->shutdown([self, p](Status st) {
            // Freed in the next iteration, not inside the orchestrator's own callback; the
            // backend after it (the orchestrator refers to it).
            self->thread_->loop().defer([self, p, st = std::move(st)]() mutable {
              self->orch_.reset();
              self->backend_.reset();
              p->set_value(std::move(st));
            });
          });
        });
      } catch (const LibraryError&) {
      }
      thread_->stop();
    }
    events_->close();
    closed_ = true;
  }

  std::optional<EventQueue::Event> next_event() { return events_->next(); }

 private:
  std::shared_ptr<EventQueue> events_ = std::make_shared<EventQueue>();
  std::unique_ptr<LoopThread> thread_;
  std::unique_ptr<LocalBackend> backend_;  // loop thread only
  OrchestratorPtr orch_;                   // loop thread only
  std::mutex close_mutex_;
  bool closed_ = false;
};

}  // namespace

void register_orchestrator(py::module_& m) {
  py::class_<OrchestratorHandle>(m, "_Orchestrator", "Orchestrator over a LocalBackend on a loop thread (use terminals.Orchestrator).")
      .def(py::init<const std::string&, const std::string&, const std::string&, std::size_t, std::size_t, double,
                    std::shared_ptr<PolicyStoreHandle>, bool, const std::string&>(),
           py::arg("data_dir"), py::arg("isolation"), py::arg("agent_path"), py::arg("max_concurrent_provisions"),
           py::arg("max_queued_provisions"), py::arg("idle_timeout_minutes"), py::arg("policies").none(true),
           py::arg("events"), py::arg("image"))
      .def("acquire", &OrchestratorHandle::acquire, py::arg("user_id"), py::arg("policy_id"), py::arg("context_id"))
      .def("list", &OrchestratorHandle::list)
      .def("stop", &OrchestratorHandle::stop, py::arg("user_id"), py::arg("policy_id"), py::arg("context_id"))
      .def("refresh", &OrchestratorHandle::refresh, py::arg("user_id"), py::arg("policy_id"), py::arg("context_id"),
           py::arg("only_idle"), py::arg("reset"))
      .def("close", &OrchestratorHandle::close)
      .def("next_event", &OrchestratorHandle::next_event,
           "The next (event, user_id, policy_id, context_id, detail), or None once closed and drained.");
}

}  // namespace terminals::python
