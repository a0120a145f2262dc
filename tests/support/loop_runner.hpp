#pragma once

// Helpers for tests that drive a Loop: run it until a condition holds (with a deadline, never a
// sleep), and check at the end that no libuv handle leaked (libuv's MAKE_VALGRIND_HAPPY).

#include <doctest/doctest.h>
#include <uv.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "terminals/loop.hpp"

namespace test {

/// Runs `loop` until `done()` is true or `timeout` passes. Returns whether `done()` held.
inline bool run_until(terminals::Loop& loop, const std::function<bool()>& done,
                      std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  // A timer wakes uv_run at least every 10 ms so the deadline is checked even when idle.
  auto tick = loop.create_timer([] {});
  tick->start(std::chrono::milliseconds(10), std::chrono::milliseconds(10));
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    uv_run(loop.native(), UV_RUN_ONCE);
  }
  return true;
}

/// Runs the loop for about `duration` (to see that something does NOT happen).
inline void run_for(terminals::Loop& loop, std::chrono::milliseconds duration) {
  auto end = std::chrono::steady_clock::now() + duration;
  run_until(loop, [&] { return std::chrono::steady_clock::now() >= end; }, duration + std::chrono::seconds(1));
}

/// Handles still open on the loop, not counting the Loop's own wake-up (async) and defer (idle)
/// handles, which live as long as the Loop.
inline int open_handles(terminals::Loop& loop) {
  int n = 0;
  uv_walk(loop.native(), [](uv_handle_t* h, void* arg) {
    if (uv_is_closing(h) || h->type == UV_ASYNC || h->type == UV_IDLE) return;
    ++*static_cast<int*>(arg);
  }, &n);
  return n;
}

/// A loop for one test. At the end, everything the test created must have been closed.
struct LoopFixture {
  std::unique_ptr<terminals::Loop> loop = terminals::Loop::create().value();

  /// Lets pending close callbacks run, then checks nothing referenced stays open.
  void check_no_leaks() {
    for (int i = 0; i < 10; ++i) uv_run(loop->native(), UV_RUN_NOWAIT);
    CHECK(open_handles(*loop) == 0);
  }
};

/// A short temporary directory (unix socket paths must stay under 108 bytes), removed at the end.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

/// Resident set size of this process in bytes (from /proc/self/statm).
std::size_t current_rss_bytes();

}  // namespace test
