#pragma once
// Shared pieces of the Python module: errors, the loop thread and the registration functions.

#include <pybind11/pybind11.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "terminals/loop.hpp"
#include "terminals/result.hpp"

namespace terminals::python {

namespace py = pybind11;

/// Thrown by binding code for a library Error; translated to terminals.errors classes.
struct LibraryError {
  Error error;
};

/// "not_found" for Errc::NotFound.
const char* errc_code(Errc code) noexcept;

[[noreturn]] inline void raise(Error error) { throw LibraryError{std::move(error)}; }

template <class T>
T unwrap(Result<T> r) {
  if (!r) raise(std::move(r).error());
  return std::move(r).value();
}
inline void unwrap(Status s) {
  if (!s) raise(std::move(s).error());
}

/// Releases the GIL for its scope when this thread holds it (stop paths also run from
/// destructors and without it).
class ReleaseGil {
 public:
  ReleaseGil() {
    if (PyGILState_Check()) release_.emplace();
  }

 private:
  std::optional<py::gil_scoped_release> release_;
};

/// A Loop running on its own std::thread. Python threads hand it work with `call()`, which
/// posts to the loop and waits (GIL released) for the loop side to fulfil a promise; nothing on
/// the loop thread touches Python.
class LoopThread {
 public:
  LoopThread();
  ~LoopThread();  // stop() and join
  LoopThread(const LoopThread&) = delete;
  LoopThread& operator=(const LoopThread&) = delete;

  /// Runs `start(promise)` on the loop thread and waits for the promise (the GIL released).
  /// The loop side must set the promise exactly once, or drop it (Cancelled).
  template <class T, class F>
  T call(F&& start) {
    auto promise = std::make_shared<std::promise<T>>();
    auto future = promise->get_future();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stopped_) raise(Error(Errc::Cancelled, "closed"));
      loop_->post([promise, start = std::forward<F>(start)]() mutable { start(promise); });
    }
    {
      ReleaseGil nogil;
      future.wait();
    }
    try {
      return future.get();
    } catch (const std::future_error&) {
      // The loop went away with the task unrun (closed from another thread meanwhile).
      raise(Error(Errc::Cancelled, "closed while the call was pending"));
    }
  }

  /// Runs `fn()` on the loop thread and returns its value.
  template <class F>
  auto run(F&& fn) -> decltype(fn()) {
    using T = decltype(fn());
    return call<T>([fn = std::forward<F>(fn)](std::shared_ptr<std::promise<T>> p) mutable {
      if constexpr (std::is_void_v<T>) {
        fn();
        p->set_value();
      } else {
        p->set_value(fn());
      }
    });
  }

  Loop& loop() { return *loop_; }
  /// Stops the loop and joins its thread; idempotent. Call with the GIL released or from a
  /// destructor (it releases the GIL itself when held).
  void stop();

 private:
  void main(std::promise<Status> ready);

  std::mutex mutex_;
  bool stopped_ = false;
  std::unique_ptr<Loop> loop_;
  std::thread thread_;
};

void register_errors(py::module_& m);
void register_server(py::module_& m);
void register_orchestrator(py::module_& m);
void register_policy(py::module_& m);

/// Seconds since the epoch, for datetime conversion on the Python side.
inline double epoch_seconds(std::chrono::system_clock::time_point t) {
  return std::chrono::duration<double>(t.time_since_epoch()).count();
}

}  // namespace terminals::python
