// The agent's /execute routes: background commands on the ProcessManager (process_manager.hpp,
// which holds the decisions on offsets, kill, expiry and the child environment), answered in
// the reference's shapes (open-terminal-api.md §4.3).
//
// Waiting (`wait` on POST /execute and on status) is a ProcessManager callback, never a block
// of the loop. The callback holds the request (so the exchange stays valid memory) and only a
// weak reference to the state; when it fires it answers only if the agent still lives and the
// client has neither left nor been answered, so each request is answered at most once and a
// torn-down agent or a departed client is simply skipped. A departed client's waiter stays
// registered until its timeout (at most 300 s): the ProcessManager has no way to cancel one,
// and it costs a timer and a small closure.

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "agent/agent_internal.hpp"
#include "json/json.hpp"

namespace terminals::detail {

namespace {

// Pydantic's bounds on the reference's query parameters.
const Bounds kWaitBounds{0.0, 300.0};
const Bounds kTailBounds{1.0, std::nullopt};
const Bounds kOffsetBounds{0.0, std::nullopt};

// How long DELETE /execute/{id} waits for the process to be gone before it answers anyway:
// the ProcessManager's SIGTERM-to-SIGKILL grace (3 s) plus its drain grace, with room to spare.
constexpr std::chrono::milliseconds kKillWait{5000};

constexpr std::string_view kNotFound = "Process not found";

std::optional<std::size_t> to_size(std::optional<std::int64_t> v) {
  if (!v) return std::nullopt;
  return static_cast<std::size_t>(*v);  // bounds already checked >= 0
}

std::chrono::milliseconds wait_duration(double seconds) {
  // `seconds` is already bounded to 0..300. Rounding by hand rather than std::llround keeps
  // libm (about 330 kB resident) out of every agent process.
  return std::chrono::milliseconds(static_cast<long long>(seconds * 1000.0 + 0.5));
}

// The process, with its output from `offset` (last `tail` entries), as the reference answers
// run_command and get_process_status. The status is read now, not when a wait began, so that
// "done" always comes with the complete output.
void send_process(AgentRequest& r, AgentState& s, std::string_view id, std::size_t offset,
                  std::optional<std::size_t> tail) {
  auto info = s.processes->get(id);
  auto page = s.processes->read_output(id, offset, tail);
  if (!info || !page) return send_detail(*r.exchange, 404, kNotFound);
  JsonWriter w;
  w.object().field("id", info->id).field("command", info->command)
      .field("status", process_status_name(info->status)).key("exit_code");
  if (info->exit_code) {
    w.value(*info->exit_code);
  } else {
    w.null();
  }
  w.key("output").array();
  for (const std::string& data : page->entries) {
    w.object().field("type", "output").field("data", data).end_object();
  }
  w.end_array().field("truncated", page->truncated).field("next_offset", page->next_offset)
      .field("log_path", info->log_path).end_object();
  send_json(*r.exchange, 200, w.take());
}

// Runs `answer` once the process finished or `timeout` passed, if the agent still lives and
// the client is still waiting for its answer.
void after_wait(const std::shared_ptr<AgentState>& s, AgentRequest& r, std::string id,
                std::chrono::milliseconds timeout,
                MoveOnlyFunction<void(AgentRequest&, AgentState&, const Result<ProcessInfo>&)>
                    answer) {
  std::weak_ptr<AgentState> weak = s;
  s->processes->wait_for_exit(
      id, timeout,
      [weak, request = r.shared_from_this(), answer = std::move(answer)](
          Result<ProcessInfo> waited) mutable {
        auto state = weak.lock();
        if (!state) return;
        auto alive = state->alive.lock();
        if (!alive || !*alive || !state->processes) return;  // the agent is being torn down
        if (request->exchange->ended() || request->exchange->aborted()) return;
        answer(*request, *state, waited);
      });
}

// Start failures, with the status a client can act on.
void send_start_error(AgentRequest& r, const Error& e, const std::string& cwd) {
  ServerExchange& ex = *r.exchange;
  switch (e.code) {
    case Errc::NotFound:  // the shell is /bin/sh: what is missing is the directory
      return send_detail(ex, 404, "Directory not found: " + cwd);
    case Errc::InvalidArgument: return send_detail(ex, 400, e.message);
    case Errc::PolicyDenied: return send_detail(ex, 403, e.message);
    case Errc::LimitExceeded:
      return send_detail(ex, 503, "Cannot start the command now: " + e.message);
    default: return send_detail(ex, 500, "Cannot start the command: " + e.message);
  }
}

// ExecRequest.env: an optional {str: str}.
bool read_env(AgentRequest& r, const rapidjson::Value& body,
              std::map<std::string, std::string>& out) {
  auto it = body.FindMember("env");
  if (it == body.MemberEnd() || it->value.IsNull()) return true;
  if (!it->value.IsObject()) {
    send_validation_error(*r.exchange, {"dict_type", {"body", "env"},
                                        "Input should be a valid dictionary", to_json(it->value)});
    return false;
  }
  for (auto m = it->value.MemberBegin(); m != it->value.MemberEnd(); ++m) {
    std::string name(m->name.GetString(), m->name.GetStringLength());
    if (!m->value.IsString()) {
      send_validation_error(*r.exchange, {"string_type", {"body", "env", name},
                                          "Input should be a valid string", to_json(m->value)});
      return false;
    }
    out[std::move(name)] = std::string(m->value.GetString(), m->value.GetStringLength());
  }
  return true;
}

}  // namespace

void add_execute_routes(AgentRouter& router, const std::shared_ptr<AgentState>& state) {
  std::shared_ptr<AgentState> s = state;

  router.add("GET", "/execute", {false, [s](AgentRequest& r) {
               JsonWriter w;
               w.array();
               for (const ProcessInfo& p : s->processes->list()) {
                 w.object().field("id", p.id).field("command", p.command)
                     .field("status", process_status_name(p.status)).key("exit_code");
                 if (p.exit_code) {
                   w.value(*p.exit_code);
                 } else {
                   w.null();
                 }
                 w.field("log_path", p.log_path).end_object();
               }
               send_json(*r.exchange, 200, w.end_array().take());
             }});

  router.add("POST", "/execute", {true, [s](AgentRequest& r) {
               std::optional<double> wait;
               if (!float_query(r, "wait", wait, kWaitBounds)) return;
               std::optional<std::int64_t> tail;
               if (!int_query(r, "tail", tail, kTailBounds)) return;
               auto doc = json_body(r);
               if (!doc) return;
               std::string_view command;
               if (!required_string(r, *doc, "command", command)) return;
               std::optional<std::string_view> cwd;
               if (!optional_string(r, *doc, "cwd", cwd)) return;
               StartOptions options;
               if (!read_env(r, *doc, options.env)) return;
               options.command = std::string(command);
               auto dir = resolve_exec_cwd(
                   make_file_context(s->cwds, s->home, session_id(r), s->file_options), cwd);
               if (!dir) return send_error(*r.exchange, dir.error());
               options.cwd = *dir;
               auto started = s->processes->start(std::move(options));
               if (!started) return send_start_error(r, started.error(), *dir);
               if (!wait) return send_process(r, *s, started->id, 0, to_size(tail));
               after_wait(s, r, started->id, wait_duration(*wait),
                          [id = started->id, tail = to_size(tail)](
                              AgentRequest& q, AgentState& st, const Result<ProcessInfo>&) {
                            send_process(q, st, id, 0, tail);
                          });
             }});

  router.add("GET", "/execute/{id}/status", {false, [s](AgentRequest& r) {
               std::optional<double> wait;
               if (!float_query(r, "wait", wait, kWaitBounds)) return;
               std::optional<std::int64_t> offset;
               if (!int_query(r, "offset", offset, kOffsetBounds)) return;
               std::optional<std::int64_t> tail;
               if (!int_query(r, "tail", tail, kTailBounds)) return;
               std::string id(r.params.get("id"));
               const std::size_t from = to_size(offset).value_or(0);
               if (!s->processes->get(id)) return send_detail(*r.exchange, 404, kNotFound);
               // With `wait`, a process that already finished answers in the next iteration.
               if (!wait) return send_process(r, *s, id, from, to_size(tail));
               after_wait(s, r, id, wait_duration(*wait),
                          [id, from, tail = to_size(tail)](AgentRequest& q, AgentState& st,
                                                           const Result<ProcessInfo>&) {
                            send_process(q, st, id, from, tail);
                          });
             }});

  router.add("POST", "/execute/{id}/input", {true, [s](AgentRequest& r) {
               auto doc = json_body(r);
               if (!doc) return;
               std::string_view input;
               if (!required_string(r, *doc, "input", input)) return;
               Status sent = s->processes->send_input(r.params.get("id"), input);
               if (!sent) {
                 const Error& e = sent.error();
                 int status = e.code == Errc::NotFound          ? 404
                              : e.code == Errc::InvalidArgument ? 400
                              : e.code == Errc::LimitExceeded   ? 429
                                                                : 500;
                 return send_detail(*r.exchange, status, e.message);
               }
               send_json(*r.exchange, 200, R"({"status":"ok"})");
             }});

  // Like the reference, the answer comes once the process is gone (up to kKillWait), so a
  // status call right after it already shows "killed" with the exit code and the process no
  // longer holds resources. Unlike the reference, the process stays listed until it expires,
  // and a process that had already finished keeps its "done" (the answer is still "killed").
  router.add("DELETE", "/execute/{id}", {false, [s](AgentRequest& r) {
               bool force = false;
               if (!bool_query(r, "force", force)) return;
               std::string id(r.params.get("id"));
               Status killed = s->processes->kill(id, force);
               if (!killed) {
                 const Error& e = killed.error();
                 return send_detail(*r.exchange, e.code == Errc::NotFound ? 404 : 500,
                                    e.message);
               }
               after_wait(s, r, id, kKillWait,
                          [](AgentRequest& q, AgentState&, const Result<ProcessInfo>&) {
                            send_json(*q.exchange, 200, R"({"status":"killed"})");
                          });
             }});
}

}  // namespace terminals::detail
