// _Service: terminals::Service on a LoopThread. The Python class terminals.Server wraps it.
#include <pybind11/stl.h>

#include <condition_variable>
#include <map>
#include <optional>
#include <vector>

#include "common.hpp"
#include "terminals/service.hpp"
#include "terminals/settings.hpp"

namespace terminals::python {
namespace {

class ServiceHandle {
 public:
  // `flags`: TERMINALS_* names to values (they win); `environment`: NAME=value lines standing in
  // for the process environment (never the real one unless the caller passes it).
  ServiceHandle(const std::map<std::string, std::string>& flags, const std::vector<std::string>& environment) {
    SettingsInput input;
    input.environment = environment;
    input.read_dotenv = false;
    input.flags = flags;
    // load_settings wants a port of 1-65535; 0 (any free port) is for embedding and tests.
    bool any_port = false;
    if (auto it = input.flags.find("TERMINALS_PORT"); it != input.flags.end() && it->second == "0") {
      any_port = true;
      input.flags.erase(it);
    }
    Settings settings = unwrap(load_settings(input));
    if (any_port) settings.port = 0;
    data_dir_ = settings.data_dir;
    thread_ = std::make_unique<LoopThread>();
    Status created = thread_->run([this, s = std::move(settings)]() mutable -> Status {
      auto svc = Service::create(thread_->loop(), std::move(s));
      if (!svc) return std::move(svc).error();
      service_ = std::move(svc).value();
      return {};
    });
    if (!created) {
      close_thread();
      raise(std::move(created).error());
    }
  }

  ~ServiceHandle() { stop(1.0); }

  void start() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (started_ && !stopping_) return;  // already serving
      if (starting_ || stopping_) raise(Error(Errc::InvalidArgument, stopping_ ? "the server was stopped; create a new one"
                                                                               : "the server is already starting"));
      starting_ = true;
    }
    struct Done {
      ServiceHandle* h;
      ~Done() {
        std::lock_guard<std::mutex> lock(h->mutex_);
        h->starting_ = false;
      }
    } done{this};
    auto* self = this;
    Status s = thread_->call<Status>([self](std::shared_ptr<std::promise<Status>> p) {
      if (!self->service_) return p->set_value(Error(Errc::Cancelled, "the server was stopped"));
      self->service_->start([self, p](Status st) {
        if (st) {
          Endpoint at = self->service_->local_endpoint();
          self->host_ = at.host;
          self->port_ = at.port;
          self->key_ = self->service_->service_key();
          self->key_generated_ = self->service_->service_key_generated();
          self->key_path_ = self->service_->service_key_path();
          self->backend_ = self->service_->backend_description();
        }
        p->set_value(std::move(st));
      });
    });
    unwrap(std::move(s));
    std::lock_guard<std::mutex> lock(mutex_);
    started_ = true;
  }

  /// Graceful stop, then the loop thread goes; idempotent and safe from any thread (a second
  /// caller waits for the first to finish).
  void stop(double grace_seconds) {
    ReleaseGil nogil;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      if (stopping_) {
        cv_.wait(lock, [this] { return stopped_; });
        return;
      }
      stopping_ = true;
    }
    if (thread_) {
      auto grace = std::chrono::milliseconds(static_cast<long long>(std::max(0.0, grace_seconds) * 1000));
      auto* self = this;
      try {
        (void)thread_->call<Status>([self, grace](std::shared_ptr<std::promise<Status>> p) {
          if (!self->service_) return p->set_value(Status{});
          self->service_->shutdown(grace, [self, p](Status st) {
            // Not inside the service's own callback: the next iteration frees it.
            self->thread_->loop().defer_delete(std::move(self->service_));
            p->set_value(std::move(st));
          });
        });
      } catch (const LibraryError&) {
        // Already closed: nothing to shut down.
      }
      thread_->stop();
    }
    std::lock_guard<std::mutex> lock(mutex_);
    stopped_ = true;
    cv_.notify_all();
  }

  /// Waits up to `timeout` seconds (GIL released) for the server to stop; true once stopped.
  bool wait(double timeout) {
    ReleaseGil nogil;
    std::unique_lock<std::mutex> lock(mutex_);
    return cv_.wait_for(lock, std::chrono::duration<double>(std::max(0.0, timeout)), [this] { return stopped_; });
  }

  bool running() {
    std::lock_guard<std::mutex> lock(mutex_);
    return started_ && !stopping_;
  }
  bool stopped() {
    std::lock_guard<std::mutex> lock(mutex_);
    return stopped_;
  }

  std::string host_, key_, key_path_, backend_, data_dir_;
  std::uint16_t port_ = 0;
  bool key_generated_ = false;

 private:
  void close_thread() {
    if (thread_) thread_->stop();
  }

  std::unique_ptr<LoopThread> thread_;
  ServicePtr service_;  // loop thread only
  std::mutex mutex_;
  std::condition_variable cv_;
  bool started_ = false, starting_ = false, stopping_ = false, stopped_ = false;
};

}  // namespace

void register_server(py::module_& m) {
  m.def("_known_setting_names", [] { return known_setting_names(); });
  py::class_<ServiceHandle>(m, "_Service", "terminals.Service on a background loop thread (use terminals.Server).")
      .def(py::init<const std::map<std::string, std::string>&, const std::vector<std::string>&>(),
           py::arg("flags"), py::arg("environment"))
      .def("start", &ServiceHandle::start, "Adopts running terminals, then listens; returns once serving.")
      .def("stop", &ServiceHandle::stop, py::arg("grace"), "Graceful stop; idempotent, any thread.")
      .def("wait", &ServiceHandle::wait, py::arg("timeout"), "True once stopped (waits up to timeout seconds).")
      .def_property_readonly("running", &ServiceHandle::running)
      .def_property_readonly("stopped", &ServiceHandle::stopped)
      .def_readonly("host", &ServiceHandle::host_)
      .def_readonly("port", &ServiceHandle::port_)
      .def_readonly("service_key", &ServiceHandle::key_)
      .def_readonly("service_key_generated", &ServiceHandle::key_generated_)
      .def_readonly("service_key_path", &ServiceHandle::key_path_)
      .def_readonly("backend_description", &ServiceHandle::backend_)
      .def_readonly("data_dir", &ServiceHandle::data_dir_);
}

}  // namespace terminals::python
