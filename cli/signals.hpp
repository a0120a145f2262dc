#pragma once

// Runs a loop until SIGINT or SIGTERM, then lets the caller shut down gracefully. Shared by the
// long-running commands (agent, serve).

#include <functional>

#include <terminals/loop.hpp>
#include <terminals/result.hpp>

namespace terminals::cli {

/// Runs `loop` until it stops. On the first SIGINT/SIGTERM, `on_signal` runs on the loop thread
/// with a `stop` function to call when the graceful shutdown is over (it stops the loop). The
/// previous signal handlers are restored before returning. Returns the loop's run status.
Status run_until_signal(Loop& loop, std::function<void(std::function<void()> stop)> on_signal);

}  // namespace terminals::cli
