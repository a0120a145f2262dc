#pragma once
// What the benchmark programs share: driving a Loop until a condition holds.

#include <time.h>

#include <chrono>

#include <terminals/loop.hpp>

namespace bench {

/// Runs `loop` until `done()` or `limit` passes; false on the timeout.
template <class Pred>
bool run_until(terminals::Loop& loop, Pred done, std::chrono::seconds limit = std::chrono::seconds(120)) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    (void)loop.run_nowait();
    if (!done()) {
      // run_nowait returns at once when nothing is ready; a short nap keeps this from spinning.
      struct timespec ts {0, 200000};
      nanosleep(&ts, nullptr);
    }
  }
  return true;
}

}  // namespace bench
