#include "agent/pty_sessions.hpp"

#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

#include "agent/pty.hpp"
#include "util/crypto.hpp"

namespace terminals::detail {

struct PtySessions::Session {
  std::string id;
  std::string created_at;
  std::uint64_t serial = 0;
  pid_t pid = 0;
  std::unique_ptr<PtyProcess> pty;
  bool attached = false;
  SessionHandlers handlers;
};

namespace {

constexpr std::uint16_t kMaxDimension = 10000;

bool valid_session_id(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  return std::all_of(id.begin(), id.end(), [](char c) { return c > 0x20 && c < 0x7F && c != '/'; });
}

bool executable(const char* path) { return path && path[0] == '/' && ::access(path, X_OK) == 0; }

}  // namespace

Result<std::unique_ptr<PtySessions>> PtySessions::create(Loop& loop, PtySessionsOptions options) {
  auto reaper = ChildReaper::create(loop);
  if (!reaper) return std::move(reaper).error();
  return std::unique_ptr<PtySessions>(
      new PtySessions(loop, std::move(options), std::move(reaper).value()));
}

PtySessions::PtySessions(Loop& loop, PtySessionsOptions options, std::shared_ptr<ChildReaper> reaper)
    : loop_(loop), options_(std::move(options)), reaper_(std::move(reaper)) {}

PtySessions::~PtySessions() {
  sessions_.clear();  // each PtyProcess SIGKILLs a shell still running; handlers are dropped
}

std::string PtySessions::resolve_shell() const {
  if (!options_.shell.empty()) return options_.shell;
  if (const char* env = ::getenv("SHELL"); executable(env)) return env;
  if (executable("/bin/bash")) return "/bin/bash";
  return "/bin/sh";
}

SessionInfo PtySessions::info(const Session& s) const {
  return SessionInfo{s.id, s.created_at, s.pid, s.serial};
}

PtySessions::Session* PtySessions::find_any(std::string_view id, std::uint64_t serial) const {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return nullptr;
  if (serial != 0 && it->second->serial != serial) return nullptr;
  return it->second.get();
}

PtySessions::Session* PtySessions::find_live(std::string_view id, std::uint64_t serial) const {
  Session* s = find_any(id, serial);
  return s && !s->pty->reaped() ? s : nullptr;
}

void PtySessions::remove(std::string_view id, bool notify_replaced) {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return;
  std::unique_ptr<Session> s = std::move(it->second);
  sessions_.erase(it);
  s->pty->terminate(options_.kill_grace);
  if (notify_replaced && s->handlers.on_exit) {
    loop_.defer([cb = std::move(s->handlers.on_exit)]() mutable { cb(std::nullopt); });
  }
  // We may be inside this session's own on_output: free it in the next iteration.
  loop_.defer_delete(std::move(s));
}

void PtySessions::prune_dead() {
  std::vector<std::string> dead;
  for (const auto& [id, s] : sessions_) {
    if (s->pty->reaped() && !s->attached) dead.push_back(id);
  }
  for (const auto& id : dead) remove(id, false);
}

Result<SessionInfo> PtySessions::create_session(CreateSessionOptions options) {
  if (!options.id.empty() && !valid_session_id(options.id)) {
    return Error(Errc::InvalidArgument,
                 "invalid terminal session id: use 1-128 printable ASCII characters without "
                 "spaces or '/'");
  }
  if (options.cols == 0 || options.rows == 0 || options.cols > kMaxDimension ||
      options.rows > kMaxDimension) {
    return Error(Errc::InvalidArgument, "terminal size must be between 1x1 and 10000x10000");
  }
  prune_dead();
  bool replacing = !options.id.empty() && sessions_.count(options.id) != 0;
  if (!replacing && sessions_.size() >= options_.max_sessions) {
    return Error(Errc::LimitExceeded, "Maximum number of terminal sessions (" +
                                          std::to_string(options_.max_sessions) + ") reached");
  }
  auto env = child_environment(options.env, options_.term);
  if (!env) return std::move(env).error();

  std::string id = options.id;
  while (id.empty() || (!replacing && sessions_.count(id) != 0)) {
    auto fresh = random_hex(4);
    if (!fresh) return std::move(fresh).error();
    id = std::move(fresh).value();
  }

  auto owned = std::make_unique<Session>();
  Session* s = owned.get();
  s->id = id;
  s->created_at = utc_iso8601_now();
  s->serial = next_serial_++;

  PtySpawnOptions spawn;
  spawn.argv = {resolve_shell()};
  spawn.cwd = std::move(options.cwd);
  spawn.env = std::move(env).value();
  spawn.cols = options.cols;
  spawn.rows = options.rows;
  spawn.start_paused = true;  // until a consumer attaches
  spawn.drain_grace = options_.drain_grace;

  PtyProcess::Handlers handlers;
  handlers.on_output = [s](std::string_view bytes) {
    if (s->handlers.on_output) s->handlers.on_output(bytes);
  };
  handlers.on_finished = [this, s](std::optional<int> code) { on_finished(*s, code); };

  auto pty = PtyProcess::spawn(loop_, reaper_, spawn, std::move(handlers));
  if (!pty) return std::move(pty).error();
  s->pty = std::move(pty).value();
  s->pid = s->pty->pid();
  // Only now that the new shell runs: a failed create leaves the old session alone.
  if (replacing) remove(id, true);
  sessions_.emplace(id, std::move(owned));
  return info(*s);
}

std::vector<SessionInfo> PtySessions::list() {
  prune_dead();
  std::vector<const Session*> live;
  for (const auto& [id, s] : sessions_) {
    if (!s->pty->reaped()) live.push_back(s.get());
  }
  std::sort(live.begin(), live.end(),
            [](const Session* a, const Session* b) { return a->serial < b->serial; });
  std::vector<SessionInfo> out;
  out.reserve(live.size());
  for (const Session* s : live) out.push_back(info(*s));
  return out;
}

Result<SessionInfo> PtySessions::get(std::string_view id) {
  prune_dead();
  const Session* s = find_live(id, 0);
  if (!s) return Error(Errc::NotFound, "Session not found");
  return info(*s);
}

Result<std::uint64_t> PtySessions::attach(std::string_view id, SessionHandlers handlers) {
  Session* s = find_live(id, 0);
  if (!s) return Error(Errc::NotFound, "Session not found");
  if (s->attached) {
    return Error(Errc::AlreadyExists, "terminal session " + s->id + " already has a consumer");
  }
  s->attached = true;
  s->handlers = std::move(handlers);
  s->pty->resume();
  return s->serial;
}

Status PtySessions::write(std::string_view id, std::string_view bytes, std::uint64_t serial) {
  Session* s = find_live(id, serial);
  if (!s) return Error(Errc::NotFound, "Session not found");
  return s->pty->write(bytes);
}

Status PtySessions::resize(std::string_view id, std::uint16_t cols, std::uint16_t rows,
                           std::uint64_t serial) {
  Session* s = find_live(id, serial);
  if (!s) return Error(Errc::NotFound, "Session not found");
  if (cols > kMaxDimension || rows > kMaxDimension) {
    return Error(Errc::InvalidArgument, "terminal size must be between 1x1 and 10000x10000");
  }
  return s->pty->resize(cols, rows);
}

Status PtySessions::pause(std::string_view id, std::uint64_t serial) {
  Session* s = find_any(id, serial);
  if (!s) return Error(Errc::NotFound, "Session not found");
  s->pty->pause();
  return {};
}

Status PtySessions::resume(std::string_view id, std::uint64_t serial) {
  Session* s = find_any(id, serial);
  if (!s) return Error(Errc::NotFound, "Session not found");
  if (s->attached) s->pty->resume();  // unattached sessions stay paused until attach()
  return {};
}

Status PtySessions::destroy(std::string_view id, std::uint64_t serial) {
  if (!find_any(id, serial)) return Error(Errc::NotFound, "Session not found");
  remove(id, false);
  return {};
}

void PtySessions::on_finished(Session& s, std::optional<int> code) {
  auto it = sessions_.find(s.id);
  if (it == sessions_.end() || it->second.get() != &s) return;
  std::unique_ptr<Session> owned = std::move(it->second);
  sessions_.erase(it);
  auto on_exit = std::move(owned->handlers.on_exit);
  owned->pty->terminate(options_.kill_grace);  // already reaped: only stops late output
  // Called from inside the session's PtyProcess: free both in the next iteration.
  loop_.defer_delete(std::move(owned));
  if (on_exit) on_exit(code);
}

}  // namespace terminals::detail
