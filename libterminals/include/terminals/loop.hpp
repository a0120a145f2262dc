#pragma once

/// @file loop.hpp
/// `Loop`: the event loop every libterminals object runs on.
///
/// Ownership, lifetime and threading rules (they hold for the whole library):
///
/// 1. Thread affinity. Every object created against a `Loop` is used only on that loop's thread.
///    The only thread-safe entry points are `Loop::post()` and `Loop::stop()`.
/// 2. Owned or borrowed. `Loop::create()` owns a fresh uv loop; `Loop::wrap()` borrows a host's.
///    A borrowed loop is never run or closed by the library, and the library's internal handles
///    do not keep it alive on their own. Library code never uses `uv_default_loop()`.
/// 3. libuv handles live in heap nodes that free themselves in their close callback; wrappers are
///    neither copyable nor movable.
/// 4. Factories return `std::unique_ptr`; destroying an object cancels its work (pending
///    callbacks then complete with `Errc::Cancelled`, or not at all where documented).
/// 5. Objects are never freed inside their own callbacks: use `defer_delete()`.
/// 6. Callbacks: each runs exactly once, on the loop thread, never synchronously inside the call
///    that started the operation.
/// 7. Views (`std::string_view`, `const&`) handed to a callback are valid only during it.

#include <chrono>
#include <cstdint>
#include <memory>

#include "terminals/export.hpp"
#include "terminals/function.hpp"
#include "terminals/result.hpp"

struct uv_loop_s;

namespace terminals {

class Timer;

class TERMINALS_API Loop {
 public:
  /// A loop that owns a new uv loop. Run it with `run()`.
  ///
  /// Creating a loop (here or with `wrap`) sets SIGPIPE to ignored when it still has its default
  /// action (which would end the process when a peer closes a socket mid-write); a handler the
  /// host installed is left alone. Children that libterminals starts get the default back.
  static Result<std::unique_ptr<Loop>> create();
  /// A loop over a host's uv loop, which the host keeps running and closing. The host must
  /// destroy this object (and everything made on it) before closing its uv loop.
  static Result<std::unique_ptr<Loop>> wrap(uv_loop_s* native);

  ~Loop();
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  /// Runs until `stop()` is called or nothing is left to do. Owned loops only; loop thread.
  Status run();
  /// Runs one non-blocking iteration (owned loops only). Returns true while work remains.
  bool run_nowait();
  /// Makes `run()` return after the current iteration. Thread-safe.
  void stop();

  /// Runs `task` on the loop thread soon. Thread-safe and async-signal-unsafe. Tasks posted
  /// from one thread run in the order they were posted.
  void post(Task task);
  /// Runs `task` on the loop thread in the next iteration, never now. Loop thread only.
  void defer(Task task);
  /// Frees `object` in the next iteration, so that an object may drop itself from inside its
  /// own callback. Loop thread only.
  template <class T>
  void defer_delete(std::unique_ptr<T> object) {
    if (object) defer([o = std::move(object)]() mutable { o.reset(); });
  }

  /// A timer on this loop; `on_fire` runs each time it fires. Loop thread only.
  std::unique_ptr<Timer> create_timer(MoveOnlyFunction<void()> on_fire);

  /// True on the thread that runs this loop (or, before it first ran, the creating thread).
  bool is_loop_thread() const noexcept;
  /// Milliseconds of the loop's cached clock (updated once per iteration).
  std::uint64_t now_ms() const noexcept;
  /// The underlying uv loop, for hosts that integrate their own libuv handles.
  uv_loop_s* native() const noexcept;
  /// Whether the loop was created by `create()` (owned) or `wrap()` (borrowed).
  bool owns_native() const noexcept;

  struct Impl;

 private:
  explicit Loop(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// A one-shot or repeating timer. Destroying it stops it.
class TERMINALS_API Timer {
 public:
  virtual ~Timer() = default;
  /// (Re)starts the timer: fires after `timeout`, then every `repeat` if non-zero.
  virtual void start(std::chrono::milliseconds timeout,
                     std::chrono::milliseconds repeat = std::chrono::milliseconds(0)) = 0;
  virtual void stop() = 0;
  virtual bool active() const = 0;
};

}  // namespace terminals
