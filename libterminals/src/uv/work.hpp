#pragma once

// Blocking work (useradd, file trees, sysfs writes) on libuv's thread pool, with the result
// handed back on the loop thread.

#include <memory>
#include <optional>
#include <utility>

#include "terminals/function.hpp"
#include "terminals/loop.hpp"
#include "terminals/result.hpp"

namespace terminals::detail {

/// Runs `work` on the pool, then `after` on the loop thread (never inside this call). If the
/// pool refuses the job, `work` runs here and `after` in the next loop iteration.
void queue_blocking(Loop& loop, MoveOnlyFunction<void()> work, MoveOnlyFunction<void()> after);

/// The same with a result: `after` receives what `work` returned.
template <class T>
void run_blocking(Loop& loop, MoveOnlyFunction<Result<T>()> work,
                  MoveOnlyFunction<void(Result<T>)> after) {
  auto slot = std::make_shared<std::optional<Result<T>>>();
  queue_blocking(
      loop, [slot, w = std::move(work)]() mutable { slot->emplace(w()); },
      [slot, a = std::move(after)]() mutable { a(std::move(**slot)); });
}

}  // namespace terminals::detail
