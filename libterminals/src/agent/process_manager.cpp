#include "agent/process_manager.hpp"

#include <signal.h>
#include <uv.h>

#include <algorithm>
#include <list>
#include <utility>

#include "agent/pty.hpp"
#include "util/crypto.hpp"
#include "util/text.hpp"

namespace terminals::detail {

// ---------------------------------------------------------------------------------------------
// Utf8Decoder

namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// For a lead byte: how many continuation bytes follow and the range allowed for the first one
// (which is what excludes overlongs, surrogates and values above U+10FFFF).
bool lead_info(unsigned char b, int& need, unsigned char& lo, unsigned char& hi) {
  lo = 0x80;
  hi = 0xBF;
  if (b >= 0xC2 && b <= 0xDF) need = 1;
  else if (b == 0xE0) need = 2, lo = 0xA0;
  else if (b == 0xED) need = 2, hi = 0x9F;
  else if (b >= 0xE1 && b <= 0xEF) need = 2;
  else if (b == 0xF0) need = 3, lo = 0x90;
  else if (b == 0xF4) need = 3, hi = 0x8F;
  else if (b >= 0xF1 && b <= 0xF3) need = 3;
  else return false;
  return true;
}

}  // namespace

std::string Utf8Decoder::decode(std::string_view bytes) {
  std::string joined;
  std::string_view s = bytes;
  if (!pending_.empty()) {
    joined = std::move(pending_);
    pending_.clear();
    joined.append(bytes);
    s = joined;
  }
  std::string out;
  out.reserve(s.size());
  std::size_t i = 0;
  const std::size_t n = s.size();
  while (i < n) {
    auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      std::size_t j = i + 1;
      while (j < n && static_cast<unsigned char>(s[j]) < 0x80) ++j;
      out.append(s.substr(i, j - i));
      i = j;
      continue;
    }
    int need = 0;
    unsigned char lo = 0, hi = 0;
    if (!lead_info(b, need, lo, hi)) {
      out.append(kReplacement);
      ++i;
      continue;
    }
    std::size_t j = i + 1;
    bool bad = false;
    for (int k = 0; k < need; ++k, ++j) {
      if (j >= n) {
        pending_.assign(s.substr(i));  // a valid start: the rest comes with the next read
        return out;
      }
      auto c = static_cast<unsigned char>(s[j]);
      if (c < (k == 0 ? lo : 0x80) || c > (k == 0 ? hi : 0xBF)) {
        bad = true;
        break;
      }
    }
    if (bad) {
      out.append(kReplacement);  // the maximal invalid subpart; the offending byte is re-read
      i = j;
      continue;
    }
    out.append(s.substr(i, j - i));
    i = j;
  }
  return out;
}

std::string Utf8Decoder::finish() {
  if (pending_.empty()) return {};
  pending_.clear();
  return std::string(kReplacement);
}

// ---------------------------------------------------------------------------------------------
// decode_input_escapes

namespace {

// Reads exactly `digits` hex digits at `pos`; -1 if there are not that many.
long read_hex(std::string_view t, std::size_t pos, int digits) {
  if (pos + static_cast<std::size_t>(digits) > t.size()) return -1;
  long v = 0;
  for (int k = 0; k < digits; ++k) {
    int h = hex_digit_value(t[pos + static_cast<std::size_t>(k)]);
    if (h < 0) return -1;
    v = v * 16 + h;
  }
  return v;
}

}  // namespace

std::string decode_input_escapes(std::string_view t) {
  std::string out;
  out.reserve(t.size());
  std::size_t i = 0;
  while (i < t.size()) {
    if (t[i] != '\\' || i + 1 >= t.size()) {
      out += t[i++];
      continue;
    }
    char e = t[i + 1];
    char simple = 0;
    switch (e) {
      case 'n': simple = '\n'; break;
      case 'r': simple = '\r'; break;
      case 't': simple = '\t'; break;
      case 'a': simple = '\a'; break;
      case 'b': simple = '\b'; break;
      case 'f': simple = '\f'; break;
      case 'v': simple = '\v'; break;
      case 'e':
      case 'E': simple = '\x1b'; break;
      case '\\': simple = '\\'; break;
      default: break;
    }
    if (simple) {
      out += simple;
      i += 2;
      continue;
    }
    if (e == 'x') {
      long v = read_hex(t, i + 2, 2);
      if (v >= 0) {
        out += static_cast<char>(v);
        i += 4;
        continue;
      }
    } else if (e == 'u' || e == 'U') {
      int digits = e == 'u' ? 4 : 8;
      long v = read_hex(t, i + 2, digits);
      if (v >= 0 && v <= 0x10FFFF && !(v >= 0xD800 && v <= 0xDFFF)) {
        append_utf8(out, static_cast<unsigned long>(v));
        i += 2 + static_cast<std::size_t>(digits);
        continue;
      }
    } else if (e >= '0' && e <= '7') {
      std::size_t j = i + 1;
      int v = 0;
      while (j < t.size() && j < i + 4 && t[j] >= '0' && t[j] <= '7') v = v * 8 + (t[j++] - '0');
      if (v <= 0xFF) {
        out += static_cast<char>(v);
        i = j;
        continue;
      }
    }
    // Not an escape we decode: the backslash stays and the next character is read normally.
    out += '\\';
    ++i;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// OutputStore

void OutputStore::append(std::string data) {
  bytes_ += data.size() + kEntryOverhead;
  entries_.push_back(std::move(data));
  // The newest entry always stays, even if it alone is over the bound.
  while (bytes_ > max_bytes_ && entries_.size() > 1) {
    bytes_ -= entries_.front().size() + kEntryOverhead;
    entries_.pop_front();
    ++first_;
  }
}

OutputPage OutputStore::read(std::size_t offset, std::optional<std::size_t> tail) const {
  OutputPage page;
  const std::size_t total = next_offset();
  page.next_offset = total;
  page.first_offset = first_;
  std::size_t start = offset;
  if (start < first_) {
    start = first_;
    page.truncated = true;
  }
  if (start > total) start = total;
  if (tail && total - start > *tail) {
    start = total - *tail;
    page.truncated = true;
  }
  page.entries.reserve(total - start);
  for (std::size_t i = start; i < total; ++i) page.entries.push_back(entries_[i - first_]);
  return page;
}

// ---------------------------------------------------------------------------------------------
// ProcessManager

const char* process_status_name(ProcessStatus status) noexcept {
  switch (status) {
    case ProcessStatus::Running: return "running";
    case ProcessStatus::Done: return "done";
    case ProcessStatus::Killed: return "killed";
  }
  return "running";
}

struct ProcessManager::Process {
  struct Waiter {
    std::uint64_t serial = 0;
    Callback<ProcessInfo> done;
    std::unique_ptr<Timer> timer;
  };

  explicit Process(std::size_t max_output_bytes) : output(max_output_bytes) {}

  std::string id;
  std::string command;
  std::string cwd;
  std::uint64_t serial = 0;
  pid_t pid = 0;
  std::unique_ptr<PtyProcess> pty;
  OutputStore output;
  Utf8Decoder decoder;
  bool finished = false;
  bool killed = false;
  std::optional<int> exit_code;
  std::uint64_t expires_at_ms = 0;
  std::list<Waiter> waiters;
  std::uint64_t next_waiter = 1;
};

Result<std::unique_ptr<ProcessManager>> ProcessManager::create(Loop& loop,
                                                               ProcessManagerOptions options) {
  auto reaper = ChildReaper::create(loop);
  if (!reaper) return std::move(reaper).error();
  return std::unique_ptr<ProcessManager>(
      new ProcessManager(loop, std::move(options), std::move(reaper).value()));
}

ProcessManager::ProcessManager(Loop& loop, ProcessManagerOptions options,
                               std::shared_ptr<ChildReaper> reaper)
    : loop_(loop), options_(std::move(options)), reaper_(std::move(reaper)) {
  expiry_timer_ = loop_.create_timer([this] { expire(); });
}

ProcessManager::~ProcessManager() {
  for (auto& [id, p] : processes_) {
    for (auto& w : p->waiters) {
      w.timer.reset();
      loop_.defer([d = std::move(w.done)]() mutable {
        d(Error(Errc::Cancelled, "the process manager was shut down"));
      });
    }
    p->waiters.clear();
  }
  processes_.clear();  // each PtyProcess SIGKILLs a child still running
  expiry_timer_.reset();
}

ProcessManager::Process* ProcessManager::find(std::string_view id) const {
  auto it = processes_.find(id);
  return it == processes_.end() ? nullptr : it->second.get();
}

ProcessInfo ProcessManager::info(const Process& p) const {
  ProcessInfo i;
  i.id = p.id;
  i.command = p.command;
  i.cwd = p.cwd;
  i.status = p.killed ? ProcessStatus::Killed
                      : (p.finished ? ProcessStatus::Done : ProcessStatus::Running);
  if (p.finished) i.exit_code = p.exit_code;
  i.pid = p.pid;
  return i;
}

Result<std::string> ProcessManager::new_id() const {
  for (;;) {
    auto suffix = random_hex(3);
    if (!suffix) return std::move(suffix).error();
    std::string id = utc_compact_timestamp() + "-" + *suffix;
    if (!find(id)) return id;
  }
}

Result<ProcessInfo> ProcessManager::start(StartOptions options) {
  auto env = child_environment(options.env, options_.term);
  if (!env) return std::move(env).error();

  auto id = new_id();
  if (!id) return std::move(id).error();
  auto owned = std::make_unique<Process>(options_.max_output_bytes);
  Process* p = owned.get();
  p->id = std::move(id).value();
  p->command = options.command;
  p->cwd = options.cwd;
  p->serial = next_serial_++;

  PtySpawnOptions spawn;
  spawn.argv = {options_.shell, "-c", std::move(options.command)};
  spawn.cwd = std::move(options.cwd);
  spawn.env = std::move(env).value();
  spawn.cols = options.cols;
  spawn.rows = options.rows;
  spawn.drain_grace = options_.drain_grace;

  PtyProcess::Handlers handlers;
  handlers.on_output = [p](std::string_view bytes) {
    std::string text = p->decoder.decode(bytes);
    if (!text.empty()) p->output.append(std::move(text));
  };
  handlers.on_eof = [p] {
    std::string rest = p->decoder.finish();
    if (!rest.empty()) p->output.append(std::move(rest));
  };
  handlers.on_finished = [this, p](std::optional<int> code) { on_finished(*p, code); };

  auto pty = PtyProcess::spawn(loop_, reaper_, spawn, std::move(handlers));
  if (!pty) return std::move(pty).error();
  p->pty = std::move(pty).value();
  p->pid = p->pty->pid();
  processes_.emplace(p->id, std::move(owned));
  return info(*p);
}

Result<ProcessInfo> ProcessManager::get(std::string_view id) const {
  const Process* p = find(id);
  if (!p) return Error(Errc::NotFound, "Process not found");
  return info(*p);
}

std::vector<ProcessInfo> ProcessManager::list() const {
  std::vector<const Process*> ordered;
  ordered.reserve(processes_.size());
  for (const auto& [id, p] : processes_) ordered.push_back(p.get());
  std::sort(ordered.begin(), ordered.end(),
            [](const Process* a, const Process* b) { return a->serial < b->serial; });
  std::vector<ProcessInfo> out;
  out.reserve(ordered.size());
  for (const Process* p : ordered) out.push_back(info(*p));
  return out;
}

Result<OutputPage> ProcessManager::read_output(std::string_view id, std::size_t offset,
                                               std::optional<std::size_t> tail) const {
  const Process* p = find(id);
  if (!p) return Error(Errc::NotFound, "Process not found");
  return p->output.read(offset, tail);
}

void ProcessManager::wait_for_exit(std::string_view id, std::chrono::milliseconds timeout,
                                   Callback<ProcessInfo> done) {
  Process* p = find(id);
  if (!p) {
    loop_.defer([d = std::move(done)]() mutable { d(Error(Errc::NotFound, "Process not found")); });
    return;
  }
  if (p->finished || timeout.count() <= 0) {
    loop_.defer([d = std::move(done), i = info(*p)]() mutable { d(std::move(i)); });
    return;
  }
  Process::Waiter w;
  w.serial = p->next_waiter++;
  w.done = std::move(done);
  // The timer belongs to the waiter, which belongs to the process: `p` outlives it.
  w.timer = loop_.create_timer([this, p, serial = w.serial] { on_wait_timeout(*p, serial); });
  // libuv timers count from the loop's cached clock, which may be stale by a whole iteration:
  // refresh it so that a wait never ends before `timeout` really passed.
  uv_update_time(loop_.native());
  w.timer->start(timeout);
  p->waiters.push_back(std::move(w));
}

void ProcessManager::on_wait_timeout(Process& p, std::uint64_t waiter) {
  auto it = std::find_if(p.waiters.begin(), p.waiters.end(),
                         [waiter](const Process::Waiter& w) { return w.serial == waiter; });
  if (it == p.waiters.end()) return;
  // This runs inside the waiter's own timer: free the timer later, and call back later too so
  // that the callback may use the manager freely.
  loop_.defer_delete(std::move(it->timer));
  loop_.defer([d = std::move(it->done), i = info(p)]() mutable { d(std::move(i)); });
  p.waiters.erase(it);
}

void ProcessManager::on_finished(Process& p, std::optional<int> code) {
  p.finished = true;
  p.exit_code = code;
  p.expires_at_ms = loop_.now_ms() + static_cast<std::uint64_t>(options_.expire_after.count());
  schedule_expiry();
  ProcessInfo snapshot = info(p);
  for (auto& w : p.waiters) {
    w.timer.reset();
    loop_.defer([d = std::move(w.done), snapshot]() mutable { d(std::move(snapshot)); });
  }
  p.waiters.clear();
}

void ProcessManager::schedule_expiry() {
  std::uint64_t next = UINT64_MAX;
  for (const auto& [id, p] : processes_) {
    if (p->finished) next = std::min(next, p->expires_at_ms);
  }
  if (next == UINT64_MAX) {
    expiry_timer_->stop();
    return;
  }
  std::uint64_t now = loop_.now_ms();
  expiry_timer_->start(std::chrono::milliseconds(next > now ? next - now : 0));
}

void ProcessManager::expire() {
  std::uint64_t now = loop_.now_ms();
  for (auto it = processes_.begin(); it != processes_.end();) {
    if (it->second->finished && it->second->expires_at_ms <= now) {
      it = processes_.erase(it);
    } else {
      ++it;
    }
  }
  schedule_expiry();
}

Status ProcessManager::send_input(std::string_view id, std::string_view text) {
  Process* p = find(id);
  if (!p) return Error(Errc::NotFound, "Process not found");
  if (p->finished || p->pty->reaped()) {
    return Error(Errc::InvalidArgument, "Process has already exited");
  }
  if (!p->pty->input_open()) return Error(Errc::InvalidArgument, "Process stdin is closed");
  return p->pty->write(decode_input_escapes(text));
}

Status ProcessManager::kill(std::string_view id, bool force) {
  Process* p = find(id);
  if (!p) return Error(Errc::NotFound, "Process not found");
  if (p->finished || p->pty->reaped()) return {};  // it exited on its own: stays "done"
  p->killed = true;
  p->pty->signal_group(force ? SIGKILL : SIGTERM);
  if (!force) p->pty->kill_group_later(options_.kill_grace);
  return {};
}

}  // namespace terminals::detail
