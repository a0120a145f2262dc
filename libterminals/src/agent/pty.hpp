#pragma once

// What the agent's command runner (process_manager) and its interactive terminals
// (pty_sessions) share: starting a program on a new pseudo-terminal, reading and writing the
// master side on the loop, reaping children through SIGCHLD, and the scrubbed environment the
// children get. Everything here runs on the loop thread.

#include <sys/types.h>
#include <uv.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "terminals/function.hpp"
#include "terminals/loop.hpp"
#include "terminals/result.hpp"
#include "uv/handle.hpp"

namespace terminals::detail {

// ---------------------------------------------------------------------------------------------
// Environment, ids, times

/// True for the agent's own secrets, which no child may see: OPEN_TERMINAL_API_KEY,
/// OPEN_TERMINAL_API_KEY_FILE and every TERMINALS_* variable.
bool is_secret_env_name(std::string_view name);

/// The environment for a child ("NAME=value" strings): this process's environment without the
/// secrets, then `overrides` applied, then TERM=`default_term` if TERM is still unset.
/// An override naming a secret is refused (PolicyDenied); a malformed name or a value with a
/// NUL byte is InvalidArgument.
Result<std::vector<std::string>> child_environment(
    const std::map<std::string, std::string>& overrides, std::string_view default_term);

/// "20260408-123456" for now, in UTC.
std::string utc_compact_timestamp();

/// "2026-04-08T12:34:56.123456Z" for now.
std::string utc_iso8601_now();

/// Popen's convention: the exit status, or minus the signal number when a signal killed it.
int exit_code_from_wait_status(int wait_status);

// ---------------------------------------------------------------------------------------------
// ChildReaper

/// Reaps the children it was told about when SIGCHLD arrives, with waitpid(pid, WNOHANG) on
/// those pids only: other children of the process (libuv's uv_spawn, a host's own) are left to
/// their owners. Shared (shared_ptr) by a manager and its PtyProcesses, because a PtyProcess
/// may be freed after its manager (defer_delete). On destruction the children still alive are
/// killed (SIGKILL to their process group) and reaped without blocking the loop.
class ChildReaper {
 public:
  using ExitHandler = MoveOnlyFunction<void(std::optional<int> exit_code)>;

  static Result<std::shared_ptr<ChildReaper>> create(Loop& loop);
  ~ChildReaper();
  ChildReaper(const ChildReaper&) = delete;
  ChildReaper& operator=(const ChildReaper&) = delete;

  /// Reaps `pid` when it exits and then calls `on_exit` (may be empty) with its exit code;
  /// nullopt when someone else reaped it first.
  void watch(pid_t pid, ExitHandler on_exit);
  /// Keeps reaping `pid` but calls nobody: its owner is gone.
  void drop_handler(pid_t pid);
  /// Forgets `pid` without killing it: a process meant to outlive its owner (a terminal's
  /// agent, adopted by the next orchestrator). Nobody reaps it while this process lives.
  void release(pid_t pid) { children_.erase(pid); }
  /// SIGKILLs the process group of `pid` if `pid` has not been reaped after `delay`.
  void kill_group_later(pid_t pid, std::chrono::milliseconds delay);
  /// Whether `pid` is still waited for.
  bool watching(pid_t pid) const { return children_.count(pid) != 0; }

 private:
  explicit ChildReaper(Loop& loop) : loop_(loop) {}
  void reap();

  struct Child {
    ExitHandler on_exit;
    std::unique_ptr<Timer> kill_timer;
  };
  Loop& loop_;
  UvHandle<uv_signal_t> signal_;
  std::unordered_map<pid_t, Child> children_;
};

// ---------------------------------------------------------------------------------------------
// PtyProcess

struct PtySpawnOptions {
  std::vector<std::string> argv;  ///< argv[0] is the absolute path that is executed
  std::string cwd;                ///< empty: this process's working directory
  std::vector<std::string> env;   ///< "NAME=value"; see child_environment()
  std::uint16_t cols = 80;
  std::uint16_t rows = 24;
  bool start_paused = false;  ///< read nothing until resume() (a terminal waiting for its consumer)
  /// After the child was reaped, how long to wait for EOF on the master before calling the
  /// process finished anyway: a background grandchild may hold the terminal open for good.
  std::chrono::milliseconds drain_grace{500};
};

/// A child running on its own pseudo-terminal: `setsid()` gives it a new session and process
/// group whose controlling terminal is the slave, which is its stdin, stdout and stderr; no
/// other descriptor is inherited and signal dispositions and mask are reset.
///
/// The master is non-blocking and polled on the loop. "Finished" means the child was reaped
/// AND the master reported EOF/EIO (every process that had the slave open is gone), or the
/// drain grace passed since the reap. Output that arrives after a grace-finish is still
/// delivered until the master is closed.
///
/// Not movable. Free it with Loop::defer_delete when inside one of its own callbacks.
class PtyProcess {
 public:
  struct Handlers {
    /// Each read from the master (at most 4096 bytes). The view is valid during the call.
    MoveOnlyFunction<void(std::string_view bytes)> on_output;
    /// The master reported EOF/EIO and was closed.
    MoveOnlyFunction<void()> on_eof;
    /// Once: reaped and drained (see above).
    MoveOnlyFunction<void(std::optional<int> exit_code)> on_finished;
  };

  /// Starts the child. Fails with NotFound (no such cwd or program), PolicyDenied (EACCES),
  /// LimitExceeded (no descriptors or ptys left) or Io. The call waits for the child's exec
  /// like uv_spawn does (a CLOEXEC pipe reports a failed chdir/exec), which takes well under
  /// a millisecond: it never waits for the program itself.
  static Result<std::unique_ptr<PtyProcess>> spawn(Loop& loop, std::shared_ptr<ChildReaper> reaper,
                                                   const PtySpawnOptions& options, Handlers handlers);
  /// Closes the master; a child not yet reaped gets SIGKILL on its group (use terminate()
  /// first for a gentle end).
  ~PtyProcess();
  PtyProcess(const PtyProcess&) = delete;
  PtyProcess& operator=(const PtyProcess&) = delete;

  pid_t pid() const { return pid_; }
  bool reaped() const { return reaped_; }
  std::optional<int> exit_code() const { return exit_code_; }
  bool finished() const { return finished_; }
  /// The master is still open (no EOF yet, not terminated).
  bool input_open() const { return master_ >= 0; }

  /// Queues bytes for the child's terminal input. InvalidArgument "stdin is closed" when the
  /// master is gone; LimitExceeded when more than 1 MiB is already waiting to be written.
  Status write(std::string_view bytes);
  /// TIOCSWINSZ on the master (the kernel sends SIGWINCH to the foreground group).
  Status resize(std::uint16_t cols, std::uint16_t rows);
  /// Stops/starts reading the master, for a slow consumer (the kernel buffer then fills and
  /// the child blocks on write).
  void pause();
  void resume();
  bool paused() const { return paused_; }

  /// Sends `sig` to the child's whole process group. False if it was already reaped.
  bool signal_group(int sig);
  /// SIGKILL to the group if the child is not reaped after `delay`.
  void kill_group_later(std::chrono::milliseconds delay);
  /// Ends it for good: closes the master (SIGHUP for the session), SIGTERM to the group,
  /// SIGKILL after `grace`, reaped in the background. No handler is called afterwards.
  void terminate(std::chrono::milliseconds grace);

 private:
  PtyProcess(Loop& loop, std::shared_ptr<ChildReaper> reaper, pid_t pid, int master,
             const PtySpawnOptions& options, Handlers handlers);
  Status start_polling();
  void update_poll();
  void on_poll(int status, int events);
  void read_some();
  void flush_writes();
  void on_master_eof();
  void close_master();
  void on_reaped(std::optional<int> code);
  void on_grace();
  void maybe_finish();
  void finish();

  Loop& loop_;
  std::shared_ptr<ChildReaper> reaper_;
  pid_t pid_;
  int master_;
  std::unique_ptr<UvHandle<uv_poll_t>> poll_;
  int poll_events_ = 0;
  Handlers handlers_;
  std::string pending_input_;  // bytes the master did not take yet (EAGAIN)
  std::unique_ptr<Timer> grace_timer_;
  std::chrono::milliseconds drain_grace_;
  bool paused_;
  bool eof_ = false;
  bool reaped_ = false;
  bool finished_ = false;
  bool terminated_ = false;
  bool grace_due_ = false;  // the grace passed while paused: finish once resumed and read
  std::optional<int> exit_code_;
};

}  // namespace terminals::detail
