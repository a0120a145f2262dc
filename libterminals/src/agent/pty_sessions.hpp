#pragma once

// Interactive terminals behind the agent's `/api/terminals` routes and their WebSocket
// (open-terminal-api.md §4.5-4.6): a shell on its own PTY, read only while one consumer is
// attached, with pause/resume for backpressure.
//
// Decisions:
// * Shell: the `shell` option, else $SHELL, else /bin/bash if present, else /bin/sh; started
//   with no arguments (interactive because its stdin is a terminal) in `cwd`, 80x24 unless
//   told otherwise, with the same scrubbed environment as /execute children.
// * Nothing is read from the master before attach(): the kernel buffers the prompt meanwhile.
// * A duplicate id REPLACES the old session: the old shell is terminated like destroy() and
//   its consumer, if any, gets on_exit(nullopt) (so its WebSocket closes); nothing leaks. Each
//   session has a `serial`; passing it to write/resize/pause/resume/destroy makes a stale
//   consumer miss (NotFound) instead of touching the session that replaced its own.
// * A session whose shell exited is no longer listed, found or attachable. With a consumer
//   attached, on_exit(exit code) is called once the output was drained, and the session is
//   then gone; without one it is pruned by the next create/list/get.
// * destroy(): closes the master (SIGHUP), SIGTERM to the process group, SIGKILL after
//   `kill_grace` (3 s), reaped in the background. The consumer's handlers are dropped and not
//   called again (it asked for the end).
// * `max_sessions` (16) counts live sessions; over it create fails with LimitExceeded.
// * Given ids (X-Session-Id) must be 1-128 printable ASCII characters without '/';
//   generated ids are 8 hex characters.

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "terminals/function.hpp"
#include "terminals/loop.hpp"
#include "terminals/result.hpp"

namespace terminals::detail {

class ChildReaper;
class PtyProcess;

struct PtySessionsOptions {
  std::size_t max_sessions = 16;
  std::string shell;                           ///< empty: $SHELL, /bin/bash, /bin/sh
  std::string term = "xterm-256color";         ///< TERM when the environment has none
  std::chrono::milliseconds kill_grace{3000};  ///< SIGTERM to SIGKILL on destroy
  std::chrono::milliseconds drain_grace{500};  ///< see PtySpawnOptions::drain_grace
};

struct CreateSessionOptions {
  std::string id;                          ///< empty: 8 random hex characters
  std::string cwd;                         ///< empty: the agent's working directory
  std::map<std::string, std::string> env;  ///< overrides, as for /execute
  std::uint16_t cols = 80;
  std::uint16_t rows = 24;
};

struct SessionInfo {
  std::string id;
  std::string created_at;  ///< ISO-8601 UTC, "2026-04-08T12:34:56.123456Z"
  pid_t pid = 0;
  std::uint64_t serial = 0;  ///< unique per session object, never reused
};

struct SessionHandlers {
  /// Raw PTY output (at most 4096 bytes a call); the view is valid during the call. May call
  /// pause() (backpressure), write() or destroy() on the session.
  MoveOnlyFunction<void(std::string_view bytes)> on_output;
  /// Once, when the shell exited and its output was drained (its exit code), or when another
  /// create_session replaced this session (nullopt). Not called after destroy().
  MoveOnlyFunction<void(std::optional<int> exit_code)> on_exit;
};

class PtySessions {
 public:
  static Result<std::unique_ptr<PtySessions>> create(Loop& loop, PtySessionsOptions options = {});
  /// Terminates every session (SIGKILL); handlers are not called.
  ~PtySessions();
  PtySessions(const PtySessions&) = delete;
  PtySessions& operator=(const PtySessions&) = delete;

  /// Starts a shell. Errors: LimitExceeded (max_sessions, or no pty left), InvalidArgument
  /// (bad id, size or env), PolicyDenied (secret env override), NotFound (cwd), Io.
  Result<SessionInfo> create_session(CreateSessionOptions options);
  /// Live sessions, oldest first.
  std::vector<SessionInfo> list();
  /// NotFound (unknown, or its shell exited).
  Result<SessionInfo> get(std::string_view id);

  /// Makes `handlers` the one consumer and starts reading. Returns the session's serial.
  /// Errors: NotFound; AlreadyExists (a consumer is already attached).
  Result<std::uint64_t> attach(std::string_view id, SessionHandlers handlers);
  /// Raw bytes to the shell's terminal. NotFound; InvalidArgument when the terminal closed;
  /// LimitExceeded (1 MiB already waiting). `serial` 0 means "whatever session has this id".
  Status write(std::string_view id, std::string_view bytes, std::uint64_t serial = 0);
  /// TIOCSWINSZ. NotFound; InvalidArgument (0 or above 10000, or the terminal closed).
  Status resize(std::string_view id, std::uint16_t cols, std::uint16_t rows,
                std::uint64_t serial = 0);
  /// Stops/starts reading the master for a slow consumer.
  Status pause(std::string_view id, std::uint64_t serial = 0);
  Status resume(std::string_view id, std::uint64_t serial = 0);
  /// Ends the session (see the header comment). NotFound.
  Status destroy(std::string_view id, std::uint64_t serial = 0);
  /// Sessions held, dead-but-unpruned ones included.
  std::size_t size() const { return sessions_.size(); }

  struct Session;  // internal

 private:
  PtySessions(Loop& loop, PtySessionsOptions options, std::shared_ptr<ChildReaper> reaper);
  Session* find_live(std::string_view id, std::uint64_t serial) const;
  Session* find_any(std::string_view id, std::uint64_t serial) const;
  void remove(std::string_view id, bool notify_replaced);
  void prune_dead();
  void on_finished(Session& s, std::optional<int> code);
  std::string resolve_shell() const;
  SessionInfo info(const Session& s) const;

  Loop& loop_;
  PtySessionsOptions options_;
  std::shared_ptr<ChildReaper> reaper_;
  std::map<std::string, std::unique_ptr<Session>, std::less<>> sessions_;
  std::uint64_t next_serial_ = 1;
};

}  // namespace terminals::detail
