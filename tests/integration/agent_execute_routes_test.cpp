// The agent's /execute routes over a real socket: real commands on real PTYs, the polling
// contract, input, kill of whole process trees, concurrency, the child environment and the
// validation errors.

#include <doctest/doctest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "json/json.hpp"
#include "support/processes.hpp"
#include "support/agent_fixture.hpp"
#include "terminals/agent.hpp"
#include "terminals/http_client.hpp"

using namespace terminals;
using namespace std::chrono_literals;

using test::AgentFixture;
using test::kKey;
using terminals::detail::to_json;

namespace {

using test::pids_after;
using test::process_gone;

rapidjson::Document parse(const FetchResponse& r) {
  auto doc = terminals::detail::parse_json(r.body);
  REQUIRE_MESSAGE(doc.has_value(), r.body);
  return std::move(doc).value();
}

std::string str(const rapidjson::Value& v, const char* name) {
  REQUIRE_MESSAGE(v.HasMember(name), name);
  REQUIRE(v[name].IsString());
  return std::string(v[name].GetString(), v[name].GetStringLength());
}

// The concatenated `data` of an answer's output entries (checking their shape on the way).
std::string joined_output(const rapidjson::Value& v) {
  REQUIRE(v.HasMember("output"));
  REQUIRE(v["output"].IsArray());
  std::string out;
  for (const auto& e : v["output"].GetArray()) {
    CHECK(str(e, "type") == "output");
    out += str(e, "data");
  }
  return out;
}

// Every field of the reference's process answer, with the right types.
void check_shape(const rapidjson::Value& v) {
  REQUIRE(v.IsObject());
  for (const char* name : {"id", "command", "status", "exit_code", "output", "truncated",
                           "next_offset", "log_path"}) {
    REQUIRE_MESSAGE(v.HasMember(name), name);
  }
  CHECK(v.MemberCount() == 8);
  CHECK(v["id"].IsString());
  CHECK(v["command"].IsString());
  CHECK(v["status"].IsString());
  REQUIRE((v["exit_code"].IsInt() || v["exit_code"].IsNull()));
  CHECK(v["output"].IsArray());
  CHECK(v["truncated"].IsBool());
  REQUIRE(v["next_offset"].IsUint64());
  CHECK(v["log_path"].IsString());
}

std::optional<int> exit_code(const rapidjson::Value& v) {
  REQUIRE(v.HasMember("exit_code"));
  if (v["exit_code"].IsNull()) return std::nullopt;
  REQUIRE(v["exit_code"].IsInt());
  return v["exit_code"].GetInt();
}

std::string exec_body(const std::string& command) {
  return terminals::detail::JsonWriter().object().field("command", command).end_object().take();
}

// POST /execute; returns the parsed answer after checking for 200.
rapidjson::Document run(AgentFixture& f, const std::string& command, const std::string& query = "",
                        Headers headers = {}) {
  auto r = f.fetch("POST", "/execute" + query, exec_body(command), std::string(kKey),
                   std::move(headers));
  REQUIRE_MESSAGE(r.head.status == 200, r.body);
  auto doc = parse(r);
  check_shape(doc);
  return doc;
}

rapidjson::Document status(AgentFixture& f, const std::string& id, const std::string& query = "") {
  auto r = f.fetch("GET", "/execute/" + id + "/status" + query);
  REQUIRE_MESSAGE(r.head.status == 200, r.body);
  auto doc = parse(r);
  check_shape(doc);
  return doc;
}

// Polls the whole output until it holds `needle`; returns it.
std::string wait_for_output(AgentFixture& f, const std::string& id, const std::string& needle) {
  auto deadline = std::chrono::steady_clock::now() + 10s;
  std::string out;
  while (std::chrono::steady_clock::now() < deadline) {
    out = joined_output(status(f, id));
    if (out.find(needle) != std::string::npos) return out;
    test::run_for(*f.loop, 20ms);
  }
  FAIL("output never showed '" << needle << "', got: " << out);
  return out;
}

std::string validation_type(const FetchResponse& r) {
  auto doc = parse(r);
  REQUIRE(doc.HasMember("detail"));
  REQUIRE(doc["detail"].IsArray());
  REQUIRE(doc["detail"].Size() == 1);
  return str(doc["detail"][0], "type");
}

}  // namespace

TEST_SUITE("integration") {

TEST_CASE("agent execute: run with wait returns done with the exit code and the output") {
  AgentFixture f;
  auto doc = run(f, "echo hello; echo world; exit 3", "?wait=20");
  CHECK(str(doc, "status") == "done");
  CHECK(exit_code(doc) == 3);
  CHECK(joined_output(doc) == "hello\r\nworld\r\n");
  CHECK(doc["truncated"].GetBool() == false);
  CHECK(doc["next_offset"].GetUint64() == doc["output"].Size());
  CHECK(doc["next_offset"].GetUint64() >= 1);
  CHECK(str(doc, "command") == "echo hello; echo world; exit 3");
  CHECK(str(doc, "log_path").empty());
  const std::string id = str(doc, "id");
  CHECK(id.size() == 22);  // YYYYMMDD-HHMMSS-xxxxxx
  CHECK(id[8] == '-');
  CHECK(id[15] == '-');

  // A signal death is negative, as Popen reports it.
  auto killed = run(f, "kill -TERM $$", "?wait=20");
  CHECK(str(killed, "status") == "done");
  CHECK(exit_code(killed) == -SIGTERM);

  // wait=null means no wait (the value is dropped before routing).
  auto nowait = run(f, "sleep 5", "?wait=null");
  CHECK(str(nowait, "status") == "running");
  CHECK(f.fetch("DELETE", "/execute/" + str(nowait, "id") + "?force=true").head.status == 200);
  f.finish();
}

TEST_CASE("agent execute: without wait the status polls by offset until done") {
  AgentFixture f;
  auto started = run(f, "for i in 1 2 3 4 5 6; do echo line$i; sleep 0.1; done");
  CHECK(str(started, "status") == "running");
  CHECK(!exit_code(started));
  const std::string id = str(started, "id");

  std::string polled = joined_output(started);
  std::uint64_t offset = started["next_offset"].GetUint64();
  int polls = 0;
  auto deadline = std::chrono::steady_clock::now() + 20s;
  bool done = false;
  while (!done && std::chrono::steady_clock::now() < deadline) {
    test::run_for(*f.loop, 70ms);
    auto page = status(f, id, "?offset=" + std::to_string(offset));
    ++polls;
    polled += joined_output(page);
    CHECK(page["next_offset"].GetUint64() >= offset);
    CHECK(page["next_offset"].GetUint64() - offset == page["output"].Size());
    offset = page["next_offset"].GetUint64();
    if (str(page, "status") == "done") {
      done = true;
      CHECK(exit_code(page) == 0);
    } else {
      CHECK(!exit_code(page));
    }
  }
  REQUIRE(done);
  CHECK(polls >= 2);  // it really was polled while running
  CHECK(polled == "line1\r\nline2\r\nline3\r\nline4\r\nline5\r\nline6\r\n");
  // Reads do not consume: offset 0 gives everything again; past the end gives nothing.
  auto all = status(f, id);
  CHECK(joined_output(all) == polled);
  CHECK(all["next_offset"].GetUint64() == offset);
  auto past = status(f, id, "?offset=" + std::to_string(offset + 10));
  CHECK(past["output"].Size() == 0);
  CHECK(past["next_offset"].GetUint64() == offset);

  // Status with wait blocks (without blocking the loop) until the process finishes.
  auto slow = run(f, "sleep 0.3; echo late");
  auto t0 = std::chrono::steady_clock::now();
  auto waited = status(f, str(slow, "id"), "?wait=20");
  CHECK(std::chrono::steady_clock::now() - t0 >= 200ms);
  CHECK(str(waited, "status") == "done");
  CHECK(joined_output(waited) == "late\r\n");
  // A short wait on a running process ends as running.
  auto sleeper = run(f, "sleep 30");
  auto short_wait = status(f, str(sleeper, "id"), "?wait=0.2");
  CHECK(str(short_wait, "status") == "running");
  CHECK(f.fetch("DELETE", "/execute/" + str(sleeper, "id") + "?force=1").head.status == 200);
  f.finish();
}

TEST_CASE("agent execute: tail gives the last entries while next_offset stays the total") {
  AgentFixture f;
  // Pauses between lines make separate PTY reads, hence separate entries.
  auto doc = run(f, "for i in 1 2 3 4 5 6; do echo e$i; sleep 0.05; done", "?wait=20");
  REQUIRE(str(doc, "status") == "done");
  const std::string id = str(doc, "id");
  const std::uint64_t total = doc["next_offset"].GetUint64();
  REQUIRE(doc["output"].Size() == total);
  REQUIRE(total >= 3);

  auto tailed = status(f, id, "?tail=2");
  REQUIRE(tailed["output"].Size() == 2);
  CHECK(str(tailed["output"][0], "data") == str(doc["output"][total - 2], "data"));
  CHECK(str(tailed["output"][1], "data") == str(doc["output"][total - 1], "data"));
  CHECK(tailed["truncated"].GetBool() == true);
  CHECK(tailed["next_offset"].GetUint64() == total);  // not 2, unlike the reference's quirk

  // tail larger than what is there: nothing cut.
  auto wide = status(f, id, "?tail=1000");
  CHECK(wide["output"].Size() == total);
  CHECK(wide["truncated"].GetBool() == false);
  // tail together with an offset applies to the entries from the offset.
  auto from = status(f, id, "?offset=" + std::to_string(total - 1) + "&tail=5");
  CHECK(from["output"].Size() == 1);
  CHECK(from["next_offset"].GetUint64() == total);

  // tail on POST /execute with wait.
  auto posted = run(f, "for i in 1 2 3 4; do echo p$i; sleep 0.05; done", "?wait=20&tail=1");
  REQUIRE(str(posted, "status") == "done");
  CHECK(posted["output"].Size() == 1);
  CHECK(joined_output(posted) == "p4\r\n");
  CHECK(posted["next_offset"].GetUint64() >= 2);
  CHECK(posted["next_offset"].GetUint64() ==
        status(f, str(posted, "id"))["next_offset"].GetUint64());
  f.finish();
}

TEST_CASE("agent execute: input with literal escapes feeds a read loop and Ctrl-C stops it") {
  AgentFixture f;
  auto doc = run(f, "while read line; do echo got:$line; done");
  const std::string id = str(doc, "id");
  // The JSON holds a backslash and an n, as an LLM writes it: the agent decodes the escape.
  auto sent = f.fetch("POST", "/execute/" + id + "/input", R"({"input":"hello world\\n"})");
  CHECK(sent.head.status == 200);
  CHECK(sent.body == R"({"status":"ok"})");
  auto out = wait_for_output(f, id, "got:hello world\r\n");
  CHECK(out.find("hello world\r\n") < out.find("got:hello world"));  // terminal echo first
  CHECK(f.fetch("POST", "/execute/" + id + "/input", R"({"input":"a\\tb\\r"})").head.status ==
        200);
  wait_for_output(f, id, "got:a b\r\n");  // the shell splits on the tab

  // \x03 is Ctrl-C: the terminal turns it into SIGINT for the foreground group.
  CHECK(f.fetch("POST", "/execute/" + id + "/input", R"({"input":"\\x03"})").head.status == 200);
  auto ended = status(f, id, "?wait=20");
  CHECK(str(ended, "status") == "done");
  CHECK(exit_code(ended) == -SIGINT);

  auto late = f.fetch("POST", "/execute/" + id + "/input", R"({"input":"more\\n"})");
  CHECK(late.head.status == 400);
  CHECK(late.body == R"({"detail":"Process has already exited"})");
  // A process that let go of its terminal (and ignores the hangup) still runs, but its input
  // is closed.
  auto detached = run(f, "trap '' HUP; exec </dev/null >/dev/null 2>&1; sleep 30");
  const std::string detached_id = str(detached, "id");
  std::optional<FetchResponse> closed;
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!closed && std::chrono::steady_clock::now() < deadline) {
    auto r = f.fetch("POST", "/execute/" + detached_id + "/input", R"({"input":"x"})");
    if (r.head.status != 200) {
      closed = std::move(r);
    } else {
      test::run_for(*f.loop, 20ms);
    }
  }
  REQUIRE(closed.has_value());
  CHECK(closed->head.status == 400);
  CHECK(closed->body == R"({"detail":"Process stdin is closed"})");
  CHECK(str(status(f, detached_id), "status") == "running");
  CHECK(f.fetch("DELETE", "/execute/" + detached_id + "?force=true").head.status == 200);

  auto missing = f.fetch("POST", "/execute/" + id + "/input", R"({"text":"x"})");
  CHECK(missing.head.status == 422);
  CHECK(validation_type(missing) == "missing");
  f.finish();
}

TEST_CASE("agent execute: DELETE ends the whole process tree and the process stays listed") {
  AgentFixture f;
  auto doc = run(f, "sleep 300 & echo P=$!; sleep 300 & echo P=$!; echo P=$$ END; wait");
  const std::string id = str(doc, "id");
  auto pids = pids_after(wait_for_output(f, id, " END"), "P=");
  REQUIRE(pids.size() == 3);
  for (pid_t p : pids) CHECK_FALSE(process_gone(p));

  auto killed = f.fetch("DELETE", "/execute/" + id);
  CHECK(killed.head.status == 200);
  CHECK(killed.body == R"({"status":"killed"})");
  // The answer came after the exit: status already has the code.
  auto after = status(f, id);
  CHECK(str(after, "status") == "killed");
  CHECK(exit_code(after) == -SIGTERM);
  CHECK(test::run_until(*f.loop, [&] {
    for (pid_t p : pids) {
      if (!process_gone(p)) return false;
    }
    return true;
  }));
  auto list = parse(f.fetch("GET", "/execute"));
  REQUIRE(list.IsArray());
  REQUIRE(list.Size() == 1);
  CHECK(str(list[0], "id") == id);
  CHECK(str(list[0], "status") == "killed");
  // Killing again, or killing a finished process, still answers "killed".
  CHECK(f.fetch("DELETE", "/execute/" + id).body == R"({"status":"killed"})");
  auto finished = run(f, "true", "?wait=20");
  CHECK(f.fetch("DELETE", "/execute/" + str(finished, "id")).body == R"({"status":"killed"})");
  CHECK(str(status(f, str(finished, "id")), "status") == "done");
  f.finish();
}

TEST_CASE("agent execute: a process ignoring SIGTERM is force killed at once or escalated") {
  AgentFixture f;
  auto doc = run(f, "trap '' TERM; sleep 300 & echo P=$! END; wait");
  const std::string id = str(doc, "id");
  auto kids = pids_after(wait_for_output(f, id, " END"), "P=");
  REQUIRE(kids.size() == 1);
  auto t0 = std::chrono::steady_clock::now();
  auto killed = f.fetch("DELETE", "/execute/" + id + "?force=true");
  CHECK(killed.head.status == 200);
  CHECK(killed.body == R"({"status":"killed"})");
  CHECK(std::chrono::steady_clock::now() - t0 < 2500ms);
  auto after = status(f, id);
  CHECK(str(after, "status") == "killed");
  CHECK(exit_code(after) == -SIGKILL);
  CHECK(test::run_until(*f.loop, [&] { return process_gone(kids[0]); }));

  // Without force the agent sends SIGTERM, then SIGKILL after its grace; the answer waits.
  auto stubborn = run(f, "trap '' TERM; echo ready; sleep 300");
  wait_for_output(f, str(stubborn, "id"), "ready");
  t0 = std::chrono::steady_clock::now();
  CHECK(f.fetch("DELETE", "/execute/" + str(stubborn, "id") + "?force=false").head.status == 200);
  CHECK(std::chrono::steady_clock::now() - t0 >= 2s);
  auto escalated = status(f, str(stubborn, "id"));
  CHECK(str(escalated, "status") == "killed");
  CHECK(exit_code(escalated) == -SIGKILL);

  auto bad_force = f.fetch("DELETE", "/execute/" + id + "?force=maybe");
  CHECK(bad_force.head.status == 422);
  CHECK(validation_type(bad_force) == "bool_parsing");
  f.finish();
}

TEST_CASE("agent execute: 50 concurrent runs with wait each get their own output") {
  AgentFixture f;
  constexpr int kCount = 50;
  // Each command waits for its input, so every request is provably in flight at once; echo is
  // off so the output is exactly what the command prints.
  auto command = [](int i) {
    return "stty -echo; echo start-" + std::to_string(i) + "; read x; echo end-" +
           std::to_string(i) + "-$x";
  };
  std::vector<std::optional<Result<FetchResponse>>> answers(kCount);
  int answered = 0;
  for (int i = 0; i < kCount; ++i) {
    RequestHead head;
    head.method = "POST";
    head.target = "/execute?wait=120";
    head.headers.add("Authorization", std::string("Bearer ") + kKey);
    head.headers.add("Content-Type", "application/json");
    f.client->fetch(f.agent->local_endpoint(), std::move(head), exec_body(command(i)),
                    [&, i](Result<FetchResponse> r) {
                      answers[i].emplace(std::move(r));
                      ++answered;
                    });
  }
  // All 50 show up as running while none has been answered.
  std::vector<std::string> ids(kCount);
  auto deadline = std::chrono::steady_clock::now() + 30s;
  int seen = 0;
  while (seen < kCount && std::chrono::steady_clock::now() < deadline) {
    auto list = parse(f.fetch("GET", "/execute"));
    seen = 0;
    for (const auto& p : list.GetArray()) {
      for (int i = 0; i < kCount; ++i) {
        if (str(p, "command") == command(i)) {
          ids[i] = str(p, "id");
          CHECK(str(p, "status") == "running");
          ++seen;
        }
      }
    }
    if (seen < kCount) test::run_for(*f.loop, 50ms);
  }
  REQUIRE(seen == kCount);
  CHECK(answered == 0);
  for (int i = 0; i < kCount; ++i) {
    wait_for_output(f, ids[i], "start-" + std::to_string(i) + "\r\n");
    auto sent = f.fetch("POST", "/execute/" + ids[i] + "/input", R"({"input":"go\\n"})");
    CHECK(sent.head.status == 200);
  }
  REQUIRE(test::run_until(*f.loop, [&] { return answered == kCount; }, 60s));
  for (int i = 0; i < kCount; ++i) {
    REQUIRE(answers[i]->has_value());
    const FetchResponse& r = answers[i]->value();
    REQUIRE_MESSAGE(r.head.status == 200, r.body);
    auto doc = parse(r);
    check_shape(doc);
    CHECK(str(doc, "id") == ids[i]);
    CHECK(str(doc, "status") == "done");
    CHECK(exit_code(doc) == 0);
    CHECK(joined_output(doc) ==
          "start-" + std::to_string(i) + "\r\nend-" + std::to_string(i) + "-go\r\n");
  }
  f.finish();
}

TEST_CASE("agent execute: the API key never reaches a child environment") {
  ::setenv("OPEN_TERMINAL_API_KEY", "agent-env-secret-1234", 1);
  ::setenv("TERMINALS_TEST_TOKEN", "terminals-token-5678", 1);
  ::setenv("EXEC_TEST_VISIBLE", "visible-value", 1);
  struct Unset {
    ~Unset() {
      ::unsetenv("OPEN_TERMINAL_API_KEY");
      ::unsetenv("TERMINALS_TEST_TOKEN");
      ::unsetenv("EXEC_TEST_VISIBLE");
    }
  } unset;
  AgentFixture f;
  auto doc = run(f, "env", "?wait=20");
  REQUIRE(str(doc, "status") == "done");
  std::string out = joined_output(doc);
  CHECK(out.find("EXEC_TEST_VISIBLE=visible-value") != std::string::npos);  // env did print
  CHECK(out.find("PATH=") != std::string::npos);
  CHECK(out.find(kKey) == std::string::npos);
  CHECK(out.find("agent-env-secret-1234") == std::string::npos);
  CHECK(out.find("OPEN_TERMINAL_API_KEY") == std::string::npos);
  CHECK(out.find("terminals-token-5678") == std::string::npos);

  // Overrides apply, but naming the key is refused.
  auto with_env = f.fetch("POST", "/execute?wait=20",
                          R"({"command":"echo $FOO-$EXEC_TEST_VISIBLE","env":{"FOO":"bar"}})");
  REQUIRE(with_env.head.status == 200);
  CHECK(joined_output(parse(with_env)) == "bar-visible-value\r\n");
  auto denied = f.fetch("POST", "/execute?wait=20",
                        R"({"command":"env","env":{"OPEN_TERMINAL_API_KEY":"x"}})");
  CHECK(denied.head.status == 403);
  CHECK(parse(denied)["detail"].IsString());
  auto bad_name = f.fetch("POST", "/execute", R"({"command":"env","env":{"A=B":"x"}})");
  CHECK(bad_name.head.status == 400);
  f.finish();
}

TEST_CASE("agent execute: authentication / unknown ids / validation errors") {
  AgentFixture f;
  auto no_key = f.fetch("POST", "/execute", exec_body("echo hi"), std::nullopt);
  CHECK(no_key.head.status == 401);
  CHECK(no_key.body == R"({"detail":"Invalid API key"})");
  CHECK(f.fetch("GET", "/execute", {}, std::nullopt).head.status == 401);
  CHECK(f.fetch("GET", "/execute/x/status", {}, std::string("wrong")).head.status == 401);
  CHECK(f.fetch("DELETE", "/execute/x", {}, std::nullopt).head.status == 401);
  CHECK(f.fetch("GET", "/execute").body == "[]");  // nothing ran

  const std::string gone = R"({"detail":"Process not found"})";
  auto st = f.fetch("GET", "/execute/20260101-000000-abcdef/status");
  CHECK(st.head.status == 404);
  CHECK(st.body == gone);
  auto st_wait = f.fetch("GET", "/execute/nope/status?wait=5");
  CHECK(st_wait.head.status == 404);
  CHECK(st_wait.body == gone);
  auto in = f.fetch("POST", "/execute/nope/input", R"({"input":"x"})");
  CHECK(in.head.status == 404);
  CHECK(in.body == gone);
  auto del = f.fetch("DELETE", "/execute/nope");
  CHECK(del.head.status == 404);
  CHECK(del.body == gone);

  auto too_long = f.fetch("POST", "/execute?wait=999", exec_body("echo hi"));
  CHECK(too_long.head.status == 422);
  CHECK(too_long.body ==
        R"({"detail":[{"type":"less_than_equal","loc":["query","wait"],)"
        R"("msg":"Input should be less than or equal to 300","input":"999","ctx":{"le":300}}]})");
  auto negative = f.fetch("POST", "/execute?wait=-1", exec_body("echo hi"));
  CHECK(negative.head.status == 422);
  CHECK(validation_type(negative) == "greater_than_equal");
  auto not_float = f.fetch("POST", "/execute?wait=soon", exec_body("echo hi"));
  CHECK(validation_type(not_float) == "float_parsing");
  auto tail0 = f.fetch("POST", "/execute?tail=0", exec_body("echo hi"));
  CHECK(tail0.head.status == 422);
  CHECK(validation_type(tail0) == "greater_than_equal");
  CHECK(validation_type(f.fetch("GET", "/execute/nope/status?tail=0")) == "greater_than_equal");
  auto offset = f.fetch("GET", "/execute/nope/status?offset=-1");
  CHECK(offset.head.status == 422);
  CHECK(validation_type(offset) == "greater_than_equal");
  CHECK(validation_type(f.fetch("GET", "/execute/nope/status?offset=x")) == "int_parsing");
  CHECK(validation_type(f.fetch("GET", "/execute/nope/status?wait=301")) == "less_than_equal");

  auto no_command = f.fetch("POST", "/execute", R"({"cwd":"/"})");
  CHECK(no_command.head.status == 422);
  auto nc = parse(no_command);
  CHECK(str(nc["detail"][0], "type") == "missing");
  CHECK(to_json(nc["detail"][0]["loc"]) == R"(["body","command"])");
  auto bad_json = f.fetch("POST", "/execute", R"({"command":)");
  CHECK(bad_json.head.status == 422);
  CHECK(validation_type(bad_json) == "json_invalid");
  auto not_string = f.fetch("POST", "/execute", R"({"command":42})");
  CHECK(validation_type(not_string) == "string_type");
  auto env_value = f.fetch("POST", "/execute", R"({"command":"env","env":{"A":"x","B":1}})");
  CHECK(env_value.head.status == 422);
  auto ev = parse(env_value);
  CHECK(str(ev["detail"][0], "type") == "string_type");
  CHECK(to_json(ev["detail"][0]["loc"]) == R"(["body","env","B"])");
  auto env_list = f.fetch("POST", "/execute", R"({"command":"env","env":["A"]})");
  CHECK(env_list.head.status == 422);
  CHECK(validation_type(env_list) == "dict_type");
  // Unknown fields are tolerated; a null env or cwd is as good as none.
  auto extra = f.fetch("POST", "/execute?wait=20",
                       R"({"command":"echo ok","env":null,"cwd":null,"timeout":5})");
  CHECK(extra.head.status == 200);
  CHECK(joined_output(parse(extra)) == "ok\r\n");
  // None of the refused requests started anything.
  CHECK(parse(f.fetch("GET", "/execute")).Size() == 1);
  f.finish();
}

TEST_CASE("agent execute: cwd resolves against the X-Session-Id working directory") {
  AgentFixture f;
  namespace fs = std::filesystem;
  const std::string home = fs::canonical(f.home.path()).string();
  fs::create_directories(f.home.file("sub/inner"));
  fs::create_directories(f.home.file("other"));
  Headers session{{"X-Session-Id", "chat-exec"}};
  auto set = f.fetch("POST", "/files/cwd", R"({"path":"sub"})", std::string(kKey), session);
  REQUIRE(set.head.status == 200);

  auto pwd = [&](const std::string& body, Headers headers) {
    auto r = f.fetch("POST", "/execute?wait=20", body, std::string(kKey), std::move(headers));
    REQUIRE_MESSAGE(r.head.status == 200, r.body);
    auto doc = parse(r);
    std::string out = joined_output(doc);
    if (out.size() >= 2 && out.compare(out.size() - 2, 2, "\r\n") == 0) out.resize(out.size() - 2);
    return out;
  };
  CHECK(pwd(R"({"command":"pwd -P","cwd":"inner"})", session) == home + "/sub/inner");
  CHECK(pwd(R"({"command":"pwd -P"})", session) == home + "/sub");
  CHECK(pwd(R"({"command":"pwd -P","cwd":".."})", session) == home);
  CHECK(pwd(R"({"command":"pwd -P","cwd":"other"})", {}) == home + "/other");
  CHECK(pwd(R"({"command":"pwd -P"})", {}) == home);
  CHECK(pwd(R"({"command":"pwd -P","cwd":"/"})", session) == "/");
  // Another session knows nothing of chat-exec's directory.
  CHECK(pwd(R"({"command":"pwd -P"})", Headers{{"X-Session-Id", "chat-other"}}) == home);

  auto missing = f.fetch("POST", "/execute", R"({"command":"pwd","cwd":"nope"})",
                         std::string(kKey), session);
  CHECK(missing.head.status == 404);
  CHECK(str(parse(missing), "detail").find("Directory not found") == 0);
  std::ofstream(f.home.file("sub/file.txt")) << "x";
  auto not_dir = f.fetch("POST", "/execute", R"({"command":"pwd","cwd":"file.txt"})",
                         std::string(kKey), session);
  CHECK(not_dir.head.status == 400);
  f.finish();
}

TEST_CASE("agent execute: the list holds the started processes with their state") {
  AgentFixture f;
  auto first = run(f, "exit 7", "?wait=20");
  auto second = run(f, "sleep 300");
  auto list = parse(f.fetch("GET", "/execute"));
  REQUIRE(list.IsArray());
  REQUIRE(list.Size() == 2);
  // Oldest first, with exactly the reference's fields.
  CHECK(to_json(list[0]) == R"({"id":")" + str(first, "id") +
                                R"(","command":"exit 7","status":"done","exit_code":7,"log_path":""})");
  CHECK(to_json(list[1]) == R"({"id":")" + str(second, "id") +
                                R"(","command":"sleep 300","status":"running","exit_code":null,"log_path":""})");
  CHECK(f.fetch("DELETE", "/execute/" + str(second, "id") + "?force=true").head.status == 200);
  auto after = parse(f.fetch("GET", "/execute"));
  REQUIRE(after.Size() == 2);
  CHECK(str(after[1], "status") == "killed");
  CHECK(exit_code(after[1]) == -SIGKILL);
  f.finish();
}

TEST_CASE("agent execute: a client that leaves during a wait is skipped and the agent carries on") {
  AgentFixture f;
  auto start_waiting = [&](const std::string& command, const std::string& wait,
                           std::optional<Result<ResponseHead>>& got) {
    RequestHead head;
    head.method = "POST";
    head.target = "/execute?wait=" + wait;
    head.headers.add("Authorization", std::string("Bearer ") + kKey);
    head.headers.add("Content-Type", "application/json");
    std::string body = exec_body(command);
    head.headers.add("Content-Length", std::to_string(body.size()));
    auto ex = f.client->request(f.agent->local_endpoint(), std::move(head),
                                [&got](Result<ResponseHead> r) { got.emplace(std::move(r)); });
    ex->end(body);
    return ex;
  };
  auto running = [&](std::size_t n) {
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < deadline) {
      auto list = parse(f.fetch("GET", "/execute"));
      if (list.Size() == n) return list;
      test::run_for(*f.loop, 20ms);
    }
    FAIL("the process never started");
    return rapidjson::Document();
  };

  // The process finishes after the client left.
  std::optional<Result<ResponseHead>> first;
  auto ex = start_waiting("read x; echo got-$x", "30", first);
  auto list = running(1);
  const std::string id = str(list[0], "id");
  ex->cancel();
  ex.reset();
  test::run_for(*f.loop, 100ms);  // the agent sees the connection go
  CHECK(f.fetch("POST", "/execute/" + id + "/input", R"({"input":"now\\n"})").head.status == 200);
  auto done = status(f, id, "?wait=20");
  CHECK(str(done, "status") == "done");
  CHECK(joined_output(done).find("got-now") != std::string::npos);
  test::run_for(*f.loop, 100ms);  // the abandoned waiter has fired by now
  REQUIRE(first.has_value());
  CHECK_FALSE(first->has_value());  // cancelled, and only once

  // The wait times out after the client left.
  std::optional<Result<ResponseHead>> second;
  auto ex2 = start_waiting("sleep 300", "0.3", second);
  list = running(2);
  const std::string sleeper = str(list[1], "id");
  ex2->cancel();
  ex2.reset();
  test::run_for(*f.loop, 600ms);
  CHECK(str(status(f, sleeper), "status") == "running");
  CHECK(f.fetch("DELETE", "/execute/" + sleeper + "?force=true").head.status == 200);
  f.finish();
}

TEST_CASE("agent execute: destroying the agent during a wait ends the wait and the process") {
  AgentFixture f;
  std::optional<Result<FetchResponse>> got;
  RequestHead head;
  head.method = "POST";
  head.target = "/execute?wait=60";
  head.headers.add("Authorization", std::string("Bearer ") + kKey);
  head.headers.add("Content-Type", "application/json");
  f.client->fetch(f.agent->local_endpoint(), std::move(head),
                  exec_body("echo P=$$ END; sleep 300"),
                  [&](Result<FetchResponse> r) { got.emplace(std::move(r)); });
  std::string id;
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (id.empty() && std::chrono::steady_clock::now() < deadline) {
    auto list = parse(f.fetch("GET", "/execute"));
    if (list.Size() == 1) id = str(list[0], "id");
    if (id.empty()) test::run_for(*f.loop, 20ms);
  }
  REQUIRE_FALSE(id.empty());
  auto pids = pids_after(wait_for_output(f, id, " END"), "P=");
  REQUIRE(pids.size() == 1);
  CHECK_FALSE(got.has_value());

  // No shutdown first: the agent goes while the request is still waiting.
  f.agent.reset();
  REQUIRE(test::run_until(*f.loop, [&] { return got.has_value(); }));
  CHECK_FALSE(got->has_value());  // the connection closed without an answer
  CHECK(test::run_until(*f.loop, [&] { return process_gone(pids[0]); }));
  f.client.reset();
  f.check_no_leaks();  // finish() without the shutdown: the agent is already gone
}

}  // TEST_SUITE
