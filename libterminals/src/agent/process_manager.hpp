#pragma once

// The command-execution core behind the agent's Open Terminal `/execute` routes: background
// commands on their own PTY, their output kept as absolutely indexed entries, waiting, input,
// kill and expiry. The route layer serialises the plain structs below.
//
// Decisions (see also the reference, open-terminal-api.md §4.3 and §10):
// * `/bin/sh -c <command>` on a new PTY (80x24), own session and process group; stdout and
//   stderr merged, terminal echo included, CRLF line ends.
// * Children never see the agent's secrets (OPEN_TERMINAL_API_KEY, OPEN_TERMINAL_API_KEY_FILE,
//   TERMINALS_*); an `env` override naming one is refused with PolicyDenied. TERM defaults to
//   xterm-256color.
// * Output entries: one per PTY read (<= 4096 bytes), decoded as UTF-8 with U+FFFD for invalid
//   bytes; a multi-byte character split across reads is completed in the next entry (a read
//   that only holds the start of a character makes no entry). Every entry has type "output".
// * Indices are absolute and never shift. The store is bounded (`max_output_bytes`, counting
//   each entry's bytes plus 32 for bookkeeping) by dropping the oldest entries; `first_offset`
//   is the index of the oldest kept one. `next_offset` is always the total number of entries
//   ever produced (the reference's tail/next_offset quirk is not copied).
// * "done"/"killed" (and `exit_code`) appear once the process was reaped AND its PTY drained
//   (EOF/EIO on the master), or `drain_grace` after the reap when a background grandchild
//   still holds the terminal; output that arrives later is still appended.
// * kill(): SIGTERM (or SIGKILL with force) to the whole process group; without force, SIGKILL
//   follows after `kill_grace` if it is still alive. Status is "killed" from that moment; a
//   process that had already exited keeps its "done" and nothing is signalled. Unlike the
//   reference, a killed process stays listed until it expires, so status still answers.
// * Finished processes are forgotten `expire_after` after they finished (then NotFound).
// * No JSONL log is written: log_path is always "".
// * Ids: "YYYYMMDD-HHMMSS-xxxxxx", UTC time plus 6 hex characters from getrandom.

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
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

// ---------------------------------------------------------------------------------------------
// Building blocks (pure, unit-tested on their own)

/// Streaming UTF-8 decoder: invalid bytes become U+FFFD (one per maximal invalid subpart, as
/// Python's errors="replace" does); an incomplete sequence at the end of a chunk is held back
/// for the next one.
class Utf8Decoder {
 public:
  std::string decode(std::string_view bytes);
  /// The held-back bytes of an unfinished character at the end of the stream, as U+FFFD.
  std::string finish();
  bool has_pending() const { return !pending_.empty(); }

 private:
  std::string pending_;  // at most 3 bytes
};

/// Decodes the escapes an LLM writes as literal text in `send_input`:
///   \n \r \t \a \b \f \v \\   the usual C meanings
///   \e \E                      ESC (0x1b)
///   \0 \NNN                    octal, 1-3 digits up to \377 (\0 NUL, \033 ESC, \003 Ctrl-C)
///   \xNN                       one raw byte, exactly 2 hex digits (\x03 is Ctrl-C)
///   \uNNNN \UNNNNNNNN          a code point, written as UTF-8
/// Anything else stays as written, backslash included: \" \' \q, a lone trailing backslash, a
/// \x with fewer than 2 hex digits, or a \u naming a surrogate or a value above U+10FFFF.
std::string decode_input_escapes(std::string_view text);

/// A page of output entries.
struct OutputPage {
  std::vector<std::string> entries;  ///< each entry's data (every entry has type "output")
  bool truncated = false;    ///< some requested entries were dropped (store bound) or cut by tail
  std::size_t next_offset = 0;   ///< absolute index after the newest entry = total entries so far
  std::size_t first_offset = 0;  ///< absolute index of the oldest entry still kept
};

/// Output entries with absolute indices, bounded by dropping the oldest.
class OutputStore {
 public:
  static constexpr std::size_t kEntryOverhead = 32;
  explicit OutputStore(std::size_t max_bytes) : max_bytes_(max_bytes) {}
  void append(std::string data);
  /// Entries from max(offset, first_offset); with `tail`, only the last `tail` of those.
  OutputPage read(std::size_t offset, std::optional<std::size_t> tail) const;
  std::size_t first_offset() const { return first_; }
  std::size_t next_offset() const { return first_ + entries_.size(); }
  std::size_t bytes() const { return bytes_; }

 private:
  std::deque<std::string> entries_;
  std::size_t first_ = 0;
  std::size_t bytes_ = 0;
  std::size_t max_bytes_;
};

// ---------------------------------------------------------------------------------------------
// ProcessManager

enum class ProcessStatus { Running, Done, Killed };
/// "running", "done" or "killed".
const char* process_status_name(ProcessStatus status) noexcept;

struct ProcessManagerOptions {
  std::size_t max_output_bytes = 4 * 1024 * 1024;  ///< per process
  std::chrono::milliseconds expire_after{300'000};  ///< finished processes are then forgotten
  std::chrono::milliseconds drain_grace{500};       ///< see "done" above
  std::chrono::milliseconds kill_grace{3000};       ///< SIGTERM to SIGKILL
  std::string shell = "/bin/sh";                    ///< runs `<shell> -c <command>`
  std::string term = "xterm-256color";              ///< TERM when the environment has none
};

struct StartOptions {
  std::string command;
  std::string cwd;                         ///< empty: the agent's working directory
  std::map<std::string, std::string> env;  ///< merged over the scrubbed agent environment
  std::uint16_t cols = 80;
  std::uint16_t rows = 24;
};

struct ProcessInfo {
  std::string id;
  std::string command;
  std::string cwd;
  ProcessStatus status = ProcessStatus::Running;
  std::optional<int> exit_code;  ///< set with done/killed; negative: killed by that signal
  std::string log_path;          ///< always "" (no log files are written)
  pid_t pid = 0;
};

class ProcessManager {
 public:
  static Result<std::unique_ptr<ProcessManager>> create(Loop& loop,
                                                        ProcessManagerOptions options = {});
  /// Kills every process still running (SIGKILL to its group). Pending wait_for_exit
  /// callbacks complete with Cancelled in the next loop iteration.
  ~ProcessManager();
  ProcessManager(const ProcessManager&) = delete;
  ProcessManager& operator=(const ProcessManager&) = delete;

  /// Starts `/bin/sh -c command`. Errors: PolicyDenied (secret env override), InvalidArgument
  /// (bad env name, NUL bytes), NotFound (cwd missing), LimitExceeded (no pty/fds), Io.
  Result<ProcessInfo> start(StartOptions options);
  /// NotFound (unknown or expired id).
  Result<ProcessInfo> get(std::string_view id) const;
  /// Every process still remembered, oldest first.
  std::vector<ProcessInfo> list() const;
  /// The process's output from `offset` (see OutputStore::read). NotFound.
  Result<OutputPage> read_output(std::string_view id, std::size_t offset,
                                 std::optional<std::size_t> tail = std::nullopt) const;
  /// Completes with the process's info when it finished (exited and output drained), or when
  /// `timeout` passed: then its status is still Running. An already finished process, or a
  /// timeout <= 0, completes in the next loop iteration. Any number of waiters; each
  /// completes exactly once, never inside this call. Errors: NotFound; Cancelled when the
  /// manager is destroyed first.
  void wait_for_exit(std::string_view id, std::chrono::milliseconds timeout,
                     Callback<ProcessInfo> done);
  /// Decodes `text` (decode_input_escapes) and writes it to the process's terminal. Errors:
  /// NotFound; InvalidArgument "Process has already exited"; InvalidArgument "Process stdin
  /// is closed" (the terminal hung up); LimitExceeded (1 MiB of input already waiting).
  Status send_input(std::string_view id, std::string_view text);
  /// SIGTERM (SIGKILL with `force`) to the process group; see the header comment. NotFound.
  Status kill(std::string_view id, bool force);
  std::size_t size() const { return processes_.size(); }

  struct Process;  // internal

 private:
  ProcessManager(Loop& loop, ProcessManagerOptions options, std::shared_ptr<ChildReaper> reaper);
  Process* find(std::string_view id) const;
  ProcessInfo info(const Process& p) const;
  void on_finished(Process& p, std::optional<int> code);
  void on_wait_timeout(Process& p, std::uint64_t waiter);
  void schedule_expiry();
  void expire();
  Result<std::string> new_id() const;

  Loop& loop_;
  ProcessManagerOptions options_;
  std::shared_ptr<ChildReaper> reaper_;
  std::map<std::string, std::unique_ptr<Process>, std::less<>> processes_;
  std::unique_ptr<Timer> expiry_timer_;
  std::uint64_t next_serial_ = 1;
};

}  // namespace terminals::detail
