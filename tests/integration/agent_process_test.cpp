// The agent's command runner and interactive terminals against real processes and PTYs.

#include <doctest/doctest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "agent/process_manager.hpp"
#include "agent/pty_sessions.hpp"
#include "support/processes.hpp"
#include "support/loop_runner.hpp"

using namespace terminals;
using namespace terminals::detail;
using namespace std::chrono_literals;

namespace {

using test::pids_after;
using test::process_gone;

std::string joined(const OutputPage& page) {
  std::string s;
  for (const auto& e : page.entries) s += e;
  return s;
}

std::string output_of(ProcessManager& pm, const std::string& id) {
  auto page = pm.read_output(id, 0);
  REQUIRE(page.has_value());
  return joined(*page);
}

// Descriptors open in this process: PTY masters and pipes must not outlive their use.
int open_fds() {
  int n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

struct Fixture : test::LoopFixture {
  std::unique_ptr<ProcessManager> pm;
  int fds_before = open_fds();

  explicit Fixture(ProcessManagerOptions options = {}) {
    pm = ProcessManager::create(*loop, std::move(options)).value();
  }

  ProcessInfo start(const std::string& command, StartOptions o = {}) {
    o.command = command;
    auto r = pm->start(std::move(o));
    if (!r) FAIL("start failed: " << r.error().to_string());
    return r.value();
  }

  // Waits for the process to finish and returns its final info.
  ProcessInfo finish(const std::string& id, std::chrono::milliseconds timeout = 20s) {
    std::optional<Result<ProcessInfo>> res;
    pm->wait_for_exit(id, timeout, [&](Result<ProcessInfo> r) { res.emplace(std::move(r)); });
    REQUIRE(test::run_until(*loop, [&] { return res.has_value(); }, timeout + 5s));
    REQUIRE(res->has_value());
    return res->value();
  }

  ProcessInfo run(const std::string& command, StartOptions o = {}) {
    return finish(start(command, std::move(o)).id);
  }

  void close() {
    pm.reset();
    check_no_leaks();
    CHECK(open_fds() == fds_before);
  }
};

// Waits until the process's output holds `needle`.
bool wait_output(Fixture& f, const std::string& id, const std::string& needle) {
  return test::run_until(*f.loop, [&] { return output_of(*f.pm, id).find(needle) != std::string::npos; });
}

}  // namespace

TEST_SUITE("integration") {

// ---------------------------------------------------------------------------------------------
// Commands

TEST_CASE("agent process: echo hello prints its output and exits 0") {
  Fixture f;
  auto started = f.start("echo hello");
  CHECK(started.status == ProcessStatus::Running);
  CHECK_FALSE(started.exit_code.has_value());
  CHECK(started.pid > 0);
  // YYYYMMDD-HHMMSS-xxxxxx
  REQUIRE(started.id.size() == 22);
  CHECK(started.id[8] == '-');
  CHECK(started.id[15] == '-');
  for (std::size_t i = 16; i < 22; ++i) CHECK(std::isxdigit(static_cast<unsigned char>(started.id[i])));

  auto done = f.finish(started.id);
  CHECK(done.status == ProcessStatus::Done);
  CHECK(std::string(process_status_name(done.status)) == "done");
  REQUIRE(done.exit_code.has_value());
  CHECK(*done.exit_code == 0);
  CHECK(done.command == "echo hello");
  CHECK(done.log_path.empty());
  CHECK(output_of(*f.pm, done.id) == "hello\r\n");

  auto listed = f.pm->list();
  REQUIRE(listed.size() == 1);
  CHECK(listed[0].id == done.id);
  CHECK(f.pm->get(done.id)->status == ProcessStatus::Done);
  CHECK(f.pm->get("nope").error().code == Errc::NotFound);
  CHECK(f.pm->read_output("nope", 0).error().code == Errc::NotFound);
  f.close();
}

TEST_CASE("agent process: the child gets only its terminal / default signals and its own session") {
  // What the agent may have set up: servers ignore SIGPIPE.
  struct sigaction ign {}, old {};
  ign.sa_handler = SIG_IGN;
  ::sigaction(SIGPIPE, &ign, &old);
  Fixture f;
  // `exec` so that the probe inspects the image we started (through /proc/self), not a shell
  // that is busy forking (dash blocks signals and holds pipe fds around vfork).
  auto fds = f.run("exec ls -1 /proc/self/fd");
  auto sig = f.run("exec grep -E '^Sig(Blk|Ign)' /proc/self/status");
  ::sigaction(SIGPIPE, &old, nullptr);
  auto ids = f.run("tty; echo \"ids=$$ $(ps -o pgid= -p $$ | tr -d ' ') $(ps -o sid= -p $$ | tr -d ' ')\"");
  // ls's own directory handle is 3; nothing of the agent's is inherited.
  CHECK(output_of(*f.pm, fds.id) == "0\r\n1\r\n2\r\n3\r\n");
  std::string out = output_of(*f.pm, sig.id);
  INFO("child output: " << out);
  CHECK(out.find("SigBlk:\t0000000000000000") != std::string::npos);
  CHECK(out.find("SigIgn:\t0000000000000000") != std::string::npos);
  out = output_of(*f.pm, ids.id);
  CHECK(out.find("/dev/pts/") == 0);
  std::string me = std::to_string(ids.pid);
  CHECK(out.find("ids=" + me + " " + me + " " + me + "\r\n") != std::string::npos);  // pid=pgid=sid
  f.close();
}

TEST_CASE("agent process: exit codes follow Popen / negative for a signal") {
  Fixture f;
  CHECK(f.run("exit 3").exit_code == 3);
  CHECK(f.run("kill -9 $$").exit_code == -9);
  CHECK(f.run("kill -TERM $$").exit_code == -15);
  f.close();
}

TEST_CASE("agent process: cwd is honoured and a missing one is NotFound") {
  Fixture f;
  test::TempDir dir;
  StartOptions o;
  o.cwd = dir.path();
  auto p = f.run("pwd", o);
  CHECK(output_of(*f.pm, p.id) == dir.path() + "\r\n");

  StartOptions bad;
  bad.command = "pwd";
  bad.cwd = dir.file("missing");
  auto r = f.pm->start(bad);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().code == Errc::NotFound);
  CHECK(f.pm->list().size() == 1);
  f.close();
}

TEST_CASE("agent process: env overrides apply and the agent's secrets never reach the child") {
  ::setenv("OPEN_TERMINAL_API_KEY", "sekrit-one", 1);
  ::setenv("OPEN_TERMINAL_API_KEY_FILE", "/run/sekrit-two", 1);
  ::setenv("TERMINALS_API_KEY", "sekrit-three", 1);
  ::setenv("TERMINALS_AGENT_TOKEN", "sekrit-four", 1);
  Fixture f;
  StartOptions o;
  o.env = {{"FOO", "bar baz"}, {"OTHER", "x=y"}};
  auto p = f.run("env; echo \"foo=[$FOO]\"", o);
  std::string out = output_of(*f.pm, p.id);
  CHECK(out.find("foo=[bar baz]") != std::string::npos);
  CHECK(out.find("OTHER=x=y") != std::string::npos);
  CHECK(out.find("TERM=") != std::string::npos);
  CHECK(out.find("sekrit") == std::string::npos);
  CHECK(out.find("OPEN_TERMINAL_API_KEY") == std::string::npos);
  CHECK(out.find("TERMINALS_") == std::string::npos);

  for (const char* name : {"OPEN_TERMINAL_API_KEY", "OPEN_TERMINAL_API_KEY_FILE", "TERMINALS_X"}) {
    StartOptions s;
    s.command = "true";
    s.env = {{name, "leak"}};
    auto r = f.pm->start(s);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == Errc::PolicyDenied);
  }
  StartOptions s;
  s.command = "true";
  s.env = {{"A=B", "x"}};
  CHECK(f.pm->start(s).error().code == Errc::InvalidArgument);
  ::unsetenv("OPEN_TERMINAL_API_KEY");
  ::unsetenv("OPEN_TERMINAL_API_KEY_FILE");
  ::unsetenv("TERMINALS_API_KEY");
  ::unsetenv("TERMINALS_AGENT_TOKEN");
  f.close();
}

TEST_CASE("agent process: output pages by absolute offset / tail keeps next_offset at the total") {
  Fixture f;
  auto p = f.run("for i in 1 2 3 4 5; do echo line$i; sleep 0.1; done");
  auto all = f.pm->read_output(p.id, 0).value();
  std::size_t total = all.next_offset;
  CHECK(total == all.entries.size());
  CHECK(total >= 2);  // separate writes with pauses between make separate reads
  CHECK_FALSE(all.truncated);
  CHECK(joined(all) == "line1\r\nline2\r\nline3\r\nline4\r\nline5\r\n");

  // Polling from an offset gives the rest, and the pieces add up.
  auto rest = f.pm->read_output(p.id, 1).value();
  CHECK(rest.entries.size() == total - 1);
  CHECK(rest.next_offset == total);
  CHECK(all.entries[0] + joined(rest) == joined(all));
  auto last = f.pm->read_output(p.id, total - 1).value();
  REQUIRE(last.entries.size() == 1);
  CHECK(last.entries[0] == all.entries.back());
  auto none = f.pm->read_output(p.id, total).value();
  CHECK(none.entries.empty());
  CHECK(none.next_offset == total);
  CHECK(f.pm->read_output(p.id, total + 10)->next_offset == total);

  // tail=1 with offset 0: the last entry, truncated, and next_offset is the total (not 1).
  auto tail = f.pm->read_output(p.id, 0, 1).value();
  REQUIRE(tail.entries.size() == 1);
  CHECK(tail.entries[0] == all.entries.back());
  CHECK(tail.truncated);
  CHECK(tail.next_offset == total);
  auto wide = f.pm->read_output(p.id, 0, 1000).value();
  CHECK(wide.entries.size() == total);
  CHECK_FALSE(wide.truncated);
  f.close();
}

TEST_CASE("agent process: a bounded store drops the oldest output / indices stay absolute") {
  ProcessManagerOptions options;
  options.max_output_bytes = 64 * 1024;
  Fixture f(options);
  auto p = f.start("seq 1 200000");
  // Remember one entry seen while running: it must keep its index.
  std::optional<std::pair<std::size_t, std::string>> seen;
  bool finished = false;
  f.pm->wait_for_exit(p.id, 60s, [&](Result<ProcessInfo>) { finished = true; });
  REQUIRE(test::run_until(*f.loop, [&] {
    if (!seen) {
      auto page = f.pm->read_output(p.id, 0).value();
      if (page.next_offset > 10) seen.emplace(page.next_offset - 1, page.entries.back());
    }
    return finished;
  }, 60s));
  CHECK(f.pm->get(p.id)->exit_code == 0);

  auto page = f.pm->read_output(p.id, 0).value();
  CHECK(page.truncated);
  CHECK(page.first_offset > 0);
  CHECK(page.next_offset == page.first_offset + page.entries.size());
  std::size_t kept = 0;
  for (const auto& e : page.entries) kept += e.size() + OutputStore::kEntryOverhead;
  CHECK(kept <= options.max_output_bytes);
  std::string tail = joined(page);
  CHECK(tail.size() > 32 * 1024);
  // The kept entries are exactly the end of the whole output.
  std::string expected;
  for (int i = 1; i <= 200000; ++i) expected += std::to_string(i) + "\r\n";
  REQUIRE(tail.size() <= expected.size());
  CHECK(expected.compare(expected.size() - tail.size(), tail.size(), tail) == 0);

  // Absolute addressing: the first kept index, the last one, and one seen while running.
  auto first = f.pm->read_output(p.id, page.first_offset).value();
  CHECK_FALSE(first.truncated);
  CHECK(first.entries.size() == page.entries.size());
  auto last = f.pm->read_output(p.id, page.next_offset - 1).value();
  REQUIRE(last.entries.size() == 1);
  CHECK(last.entries[0] == page.entries.back());
  REQUIRE(seen.has_value());
  if (seen->first >= page.first_offset) {
    CHECK(f.pm->read_output(p.id, seen->first)->entries.at(0) == seen->second);
  } else {
    CHECK(f.pm->read_output(p.id, seen->first)->truncated);
  }
  f.close();
}

TEST_CASE("agent process: a UTF-8 character split across two reads arrives whole") {
  Fixture f;
  auto p = f.run("printf '\\342\\202'; sleep 0.3; printf '\\254\\n'");
  CHECK(output_of(*f.pm, p.id) == "\xE2\x82\xAC\r\n");
  auto bad = f.run("printf 'a\\377b\\n'");
  CHECK(output_of(*f.pm, bad.id) == "a\xEF\xBF\xBD" "b\r\n");
  // A stream that ends inside a character ends with U+FFFD.
  auto cut = f.run("printf 'z\\342\\202'");
  CHECK(output_of(*f.pm, cut.id) == "z\xEF\xBF\xBD");
  f.close();
}

TEST_CASE("agent process: input with a literal \\n reaches the program") {
  Fixture f;
  auto p = f.start("read line; echo got:$line");
  REQUIRE(f.pm->send_input(p.id, "hello world\\n"));
  CHECK(wait_output(f, p.id, "got:hello world\r\n"));
  auto done = f.finish(p.id);
  CHECK(done.exit_code == 0);
  auto after = f.pm->send_input(p.id, "more\\n");
  REQUIRE_FALSE(after.has_value());
  CHECK(after.error().code == Errc::InvalidArgument);
  CHECK(after.error().message == "Process has already exited");
  CHECK(f.pm->send_input("nope", "x").error().code == Errc::NotFound);
  f.close();
}

TEST_CASE("agent process: kill ends the whole process tree and the process stays listed") {
  Fixture f;
  auto p = f.start("sleep 1000 & echo P=$!; sleep 1000 & echo P=$!; wait");
  std::vector<pid_t> kids;
  REQUIRE(test::run_until(*f.loop, [&] {
    kids = pids_after(output_of(*f.pm, p.id), "P=");
    return kids.size() == 2;
  }));
  for (pid_t k : kids) CHECK_FALSE(process_gone(k));

  REQUIRE(f.pm->kill(p.id, false));
  CHECK(f.pm->get(p.id)->status == ProcessStatus::Killed);
  auto done = f.finish(p.id);
  CHECK(done.status == ProcessStatus::Killed);
  CHECK(std::string(process_status_name(done.status)) == "killed");
  CHECK(done.exit_code == -SIGTERM);
  CHECK(test::run_until(*f.loop, [&] { return process_gone(kids[0]) && process_gone(kids[1]); }));
  CHECK(f.pm->get(p.id)->status == ProcessStatus::Killed);  // still answers
  CHECK(f.pm->kill(p.id, true));                             // and a second kill is harmless
  CHECK(f.pm->kill("nope", false).error().code == Errc::NotFound);

  // A finished process is not signalled and stays "done".
  auto ok = f.run("true");
  CHECK(f.pm->kill(ok.id, false));
  CHECK(f.pm->get(ok.id)->status == ProcessStatus::Done);
  f.close();
}

TEST_CASE("agent process: kill escalates to SIGKILL / force kills at once") {
  ProcessManagerOptions options;
  options.kill_grace = 300ms;
  Fixture f(options);
  // The shell and its child ignore SIGTERM (an ignored disposition survives exec).
  auto stubborn = f.start("trap '' TERM; sleep 1000 & echo P=$!; wait");
  std::vector<pid_t> kids;
  REQUIRE(test::run_until(*f.loop, [&] {
    kids = pids_after(output_of(*f.pm, stubborn.id), "P=");
    return kids.size() == 1;
  }));
  auto t0 = std::chrono::steady_clock::now();
  REQUIRE(f.pm->kill(stubborn.id, false));
  auto done = f.finish(stubborn.id);
  CHECK(std::chrono::steady_clock::now() - t0 >= 250ms);
  CHECK(done.exit_code == -SIGKILL);
  CHECK(test::run_until(*f.loop, [&] { return process_gone(kids[0]); }));

  auto forced = f.start("trap '' TERM; sleep 1000");
  REQUIRE(f.pm->kill(forced.id, true));
  CHECK(f.finish(forced.id).exit_code == -SIGKILL);
  f.close();
}

TEST_CASE("agent process: 50 concurrent commands all complete with their own output") {
  Fixture f;
  constexpr int kCount = 50;
  std::vector<std::string> ids;
  for (int i = 0; i < kCount; ++i) {
    ids.push_back(f.start("echo start-" + std::to_string(i) + "; sleep 0." + std::to_string(i % 4) +
                          "; echo end-" + std::to_string(i))
                      .id);
  }
  int completed = 0;
  std::vector<std::optional<ProcessInfo>> results(kCount);
  for (int i = 0; i < kCount; ++i) {
    f.pm->wait_for_exit(ids[i], 30s, [&, i](Result<ProcessInfo> r) {
      ++completed;
      if (r) results[i] = r.value();
    });
  }
  REQUIRE(test::run_until(*f.loop, [&] { return completed == kCount; }, 40s));
  for (int i = 0; i < kCount; ++i) {
    REQUIRE(results[i].has_value());
    CHECK(results[i]->status == ProcessStatus::Done);
    CHECK(results[i]->exit_code == 0);
    CHECK(output_of(*f.pm, ids[i]) ==
          "start-" + std::to_string(i) + "\r\nend-" + std::to_string(i) + "\r\n");
  }
  CHECK(f.pm->list().size() == kCount);
  f.close();
}

TEST_CASE("agent process: wait_for_exit times out as running / never completes synchronously") {
  Fixture f;
  auto p = f.start("sleep 1000");
  std::optional<Result<ProcessInfo>> short_wait, long_wait, unknown, zero;
  auto t0 = std::chrono::steady_clock::now();
  f.pm->wait_for_exit(p.id, 100ms, [&](Result<ProcessInfo> r) { short_wait.emplace(std::move(r)); });
  f.pm->wait_for_exit(p.id, 30s, [&](Result<ProcessInfo> r) { long_wait.emplace(std::move(r)); });
  f.pm->wait_for_exit("nope", 30s, [&](Result<ProcessInfo> r) { unknown.emplace(std::move(r)); });
  f.pm->wait_for_exit(p.id, 0ms, [&](Result<ProcessInfo> r) { zero.emplace(std::move(r)); });
  CHECK_FALSE(short_wait.has_value());
  CHECK_FALSE(unknown.has_value());
  CHECK_FALSE(zero.has_value());

  REQUIRE(test::run_until(*f.loop, [&] { return short_wait.has_value(); }));
  CHECK(std::chrono::steady_clock::now() - t0 >= 90ms);
  REQUIRE(short_wait->has_value());
  CHECK(short_wait->value().status == ProcessStatus::Running);
  CHECK_FALSE(short_wait->value().exit_code.has_value());
  REQUIRE(unknown.has_value());
  CHECK(unknown->error().code == Errc::NotFound);
  REQUIRE(zero.has_value());
  CHECK(zero->value().status == ProcessStatus::Running);
  CHECK_FALSE(long_wait.has_value());

  REQUIRE(f.pm->kill(p.id, false));
  REQUIRE(test::run_until(*f.loop, [&] { return long_wait.has_value(); }));
  CHECK(long_wait->value().status == ProcessStatus::Killed);

  // Already finished: completes in a later iteration, not inside the call.
  std::optional<Result<ProcessInfo>> again;
  f.pm->wait_for_exit(p.id, 30s, [&](Result<ProcessInfo> r) { again.emplace(std::move(r)); });
  CHECK_FALSE(again.has_value());
  REQUIRE(test::run_until(*f.loop, [&] { return again.has_value(); }));
  CHECK(again->value().status == ProcessStatus::Killed);
  f.close();
}

TEST_CASE("agent process: finished processes expire after the configured time") {
  ProcessManagerOptions options;
  options.expire_after = 300ms;
  Fixture f(options);
  auto running = f.start("sleep 1000");
  auto p = f.run("echo bye");
  auto t0 = std::chrono::steady_clock::now();
  CHECK(f.pm->get(p.id).has_value());
  REQUIRE(test::run_until(*f.loop, [&] { return !f.pm->get(p.id).has_value(); }));
  CHECK(std::chrono::steady_clock::now() - t0 >= 200ms);
  CHECK(f.pm->get(p.id).error().code == Errc::NotFound);
  CHECK(f.pm->read_output(p.id, 0).error().code == Errc::NotFound);
  // A running process never expires.
  test::run_for(*f.loop, 400ms);
  CHECK(f.pm->get(running.id)->status == ProcessStatus::Running);
  REQUIRE(f.pm->kill(running.id, true));
  f.finish(running.id);
  REQUIRE(test::run_until(*f.loop, [&] { return f.pm->list().empty(); }));
  f.close();
}

TEST_CASE("agent process: destroying the manager kills its children and cancels waiters") {
  test::LoopFixture f;
  auto pm = ProcessManager::create(*f.loop).value();
  StartOptions o;
  o.command = "sleep 1000";
  auto p = pm->start(o).value();
  std::optional<Result<ProcessInfo>> res;
  pm->wait_for_exit(p.id, 30s, [&](Result<ProcessInfo> r) { res.emplace(std::move(r)); });
  pm.reset();
  CHECK_FALSE(res.has_value());
  REQUIRE(test::run_until(*f.loop, [&] { return res.has_value(); }));
  CHECK(res->error().code == Errc::Cancelled);
  CHECK(test::run_until(*f.loop, [&] { return process_gone(p.pid); }));
  f.check_no_leaks();
}

// ---------------------------------------------------------------------------------------------
// Interactive terminals

namespace {

struct SessionFixture : test::LoopFixture {
  std::unique_ptr<PtySessions> sessions;
  int fds_before = open_fds();
  explicit SessionFixture(PtySessionsOptions options = {}) {
    sessions = PtySessions::create(*loop, std::move(options)).value();
  }
  void close() {
    sessions.reset();
    check_no_leaks();
    CHECK(open_fds() == fds_before);
  }
};

struct Consumer {
  std::string out;
  int exits = 0;
  std::optional<int> exit_code;
  SessionHandlers handlers() {
    SessionHandlers h;
    h.on_output = [this](std::string_view b) { out.append(b); };
    h.on_exit = [this](std::optional<int> c) {
      ++exits;
      exit_code = c;
    };
    return h;
  }
};

}  // namespace

TEST_CASE("agent pty: a session runs a shell that echoes / resizes and dies on destroy") {
  ::setenv("OPEN_TERMINAL_API_KEY", "sekrit-session", 1);
  SessionFixture f;
  test::TempDir dir;
  CreateSessionOptions o;
  o.cwd = dir.path();
  auto s = f.sessions->create_session(o);
  ::unsetenv("OPEN_TERMINAL_API_KEY");
  REQUIRE(s.has_value());
  CHECK(s->id.size() == 8);
  CHECK(s->pid > 0);
  CHECK(s->created_at.back() == 'Z');
  CHECK(s->created_at.find('T') == 10);
  CHECK(f.sessions->get(s->id)->pid == s->pid);
  REQUIRE(f.sessions->list().size() == 1);

  Consumer c;
  auto serial = f.sessions->attach(s->id, c.handlers());
  REQUIRE(serial.has_value());
  CHECK(*serial == s->serial);
  CHECK(f.sessions->attach(s->id, c.handlers()).error().code == Errc::AlreadyExists);

  REQUIRE(f.sessions->write(s->id, "echo hi\n"));
  CHECK(test::run_until(*f.loop, [&] { return c.out.find("hi") != std::string::npos; }));
  REQUIRE(f.sessions->write(s->id, "echo mark$((6*7)) \"$PWD\" key=${OPEN_TERMINAL_API_KEY:-none}\n"));
  CHECK(test::run_until(*f.loop, [&] {
    return c.out.find("mark42 " + dir.path() + " key=none") != std::string::npos;
  }));
  REQUIRE(f.sessions->resize(s->id, 100, 30));
  REQUIRE(f.sessions->write(s->id, "stty size\n"));
  CHECK(test::run_until(*f.loop, [&] { return c.out.find("30 100") != std::string::npos; }));
  CHECK(f.sessions->resize(s->id, 0, 10).error().code == Errc::InvalidArgument);

  REQUIRE(f.sessions->destroy(s->id));
  CHECK(f.sessions->get(s->id).error().code == Errc::NotFound);
  CHECK(f.sessions->list().empty());
  CHECK(f.sessions->destroy(s->id).error().code == Errc::NotFound);
  CHECK(f.sessions->write(s->id, "x").error().code == Errc::NotFound);
  CHECK(test::run_until(*f.loop, [&] { return process_gone(s->pid); }));
  test::run_for(*f.loop, 50ms);
  CHECK(c.exits == 0);  // destroy drops the handlers
  f.close();
}

TEST_CASE("agent pty: the shell's exit reaches the consumer and the session disappears") {
  PtySessionsOptions options;
  options.shell = "/bin/sh";
  SessionFixture f(options);
  auto s = f.sessions->create_session({}).value();
  Consumer c;
  REQUIRE(f.sessions->attach(s.id, c.handlers()));
  REQUIRE(f.sessions->write(s.id, "echo bye; exit 7\n"));
  REQUIRE(test::run_until(*f.loop, [&] { return c.exits == 1; }));
  CHECK(c.exit_code == 7);
  CHECK(c.out.find("bye") != std::string::npos);
  CHECK(f.sessions->get(s.id).error().code == Errc::NotFound);
  CHECK(f.sessions->size() == 0);

  // Unattached and dead: pruned by the next lookup.
  auto lone = f.sessions->create_session({}).value();
  ::kill(lone.pid, SIGKILL);
  CHECK(test::run_until(*f.loop, [&] { return !f.sessions->get(lone.id).has_value(); }));
  CHECK(f.sessions->list().empty());
  CHECK(f.sessions->attach(lone.id, c.handlers()).error().code == Errc::NotFound);
  test::run_for(*f.loop, 20ms);
  CHECK(c.exits == 1);
  f.close();
}

TEST_CASE("agent pty: max sessions are enforced") {
  PtySessionsOptions options;
  options.max_sessions = 2;
  options.shell = "/bin/sh";
  SessionFixture f(options);
  auto a = f.sessions->create_session({}).value();
  auto b = f.sessions->create_session({}).value();
  CHECK(a.id != b.id);
  auto c = f.sessions->create_session({});
  REQUIRE_FALSE(c.has_value());
  CHECK(c.error().code == Errc::LimitExceeded);
  CHECK(c.error().message == "Maximum number of terminal sessions (2) reached");
  REQUIRE(f.sessions->destroy(a.id));
  auto d = f.sessions->create_session({}).value();
  REQUIRE(f.sessions->destroy(b.id));
  REQUIRE(f.sessions->destroy(d.id));
  CHECK(test::run_until(*f.loop, [&] {
    return process_gone(a.pid) && process_gone(b.pid) && process_gone(d.pid);
  }));
  CreateSessionOptions bad;
  bad.id = "has/slash";
  CHECK(f.sessions->create_session(bad).error().code == Errc::InvalidArgument);
  f.close();
}

TEST_CASE("agent pty: a duplicate id replaces the old session without leaking it") {
  PtySessionsOptions options;
  options.shell = "/bin/sh";
  SessionFixture f(options);
  CreateSessionOptions o;
  o.id = "chat-1234";
  auto first = f.sessions->create_session(o).value();
  CHECK(first.id == "chat-1234");
  Consumer old_consumer;
  REQUIRE(f.sessions->attach(first.id, old_consumer.handlers()));

  auto second = f.sessions->create_session(o).value();
  CHECK(second.id == "chat-1234");
  CHECK(second.pid != first.pid);
  CHECK(second.serial != first.serial);
  CHECK(old_consumer.exits == 0);  // told in a later iteration
  REQUIRE(test::run_until(*f.loop, [&] { return old_consumer.exits == 1; }));
  CHECK_FALSE(old_consumer.exit_code.has_value());
  CHECK(test::run_until(*f.loop, [&] { return process_gone(first.pid); }));

  auto listed = f.sessions->list();
  REQUIRE(listed.size() == 1);
  CHECK(listed[0].pid == second.pid);
  // The old consumer's serial no longer reaches the session that replaced it.
  CHECK(f.sessions->write(first.id, "x", first.serial).error().code == Errc::NotFound);
  CHECK(f.sessions->destroy(first.id, first.serial).error().code == Errc::NotFound);
  REQUIRE(f.sessions->destroy(second.id, second.serial));
  CHECK(test::run_until(*f.loop, [&] { return process_gone(second.pid); }));
  f.close();
}

TEST_CASE("agent pty: pause holds output back until resume") {
  PtySessionsOptions options;
  options.shell = "/bin/sh";
  SessionFixture f(options);
  auto s = f.sessions->create_session({}).value();
  Consumer c;
  REQUIRE(f.sessions->attach(s.id, c.handlers()));
  REQUIRE(f.sessions->pause(s.id));
  REQUIRE(f.sessions->write(s.id, "echo x$((1+1))y\n"));
  test::run_for(*f.loop, 300ms);
  CHECK(c.out.find("x2y") == std::string::npos);
  REQUIRE(f.sessions->resume(s.id));
  CHECK(test::run_until(*f.loop, [&] { return c.out.find("x2y") != std::string::npos; }));
  REQUIRE(f.sessions->destroy(s.id));
  CHECK(test::run_until(*f.loop, [&] { return process_gone(s.pid); }));
  f.close();
}

}  // TEST_SUITE
