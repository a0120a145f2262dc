// The agent's /api/terminals REST routes (open-terminal-api.md §4.5): create, list, get and
// delete interactive shells on PtySessions (pty_sessions.hpp holds the session decisions). The
// WebSocket that drives a session is in agent_terminal_socket.cpp.
//
// Like the reference these routes answer errors as {"error": "..."}, not {"detail"}.
// Differences from the reference, on purpose:
// * A duplicate X-Session-Id replaces the old session and ends its shell (PtySessions), where
//   the reference leaked the old PTY.
// * An X-Session-Id PtySessions refuses as an id (over 128 characters, '/', control
//   characters) gets 400 instead of a session nobody could address in a URL.
// * A session cwd that no longer exists falls back to home instead of failing the create.

#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "agent/agent_internal.hpp"
#include "json/json.hpp"

namespace terminals::detail {

namespace {

constexpr std::string_view kNotFound = "Session not found";

void send_terminal_error(ServerExchange& ex, int status, std::string_view message) {
  send_json(ex, status, JsonWriter().object().field("error", message).end_object().take());
}

void write_session(JsonWriter& w, const SessionInfo& s) {
  w.object().field("id", s.id).field("created_at", s.created_at)
      .field("pid", static_cast<std::int64_t>(s.pid)).end_object();
}

// The status for a failed create. PtySessions reports both its session cap and an exhausted
// PTY pool as LimitExceeded; only the cap carries the reference's 429 message.
int create_error_status(const Error& e) {
  switch (e.code) {
    case Errc::LimitExceeded:
      return e.message.starts_with("Maximum number of terminal sessions") ? 429 : 503;
    case Errc::InvalidArgument:
    case Errc::PolicyDenied:
      return 400;
    case Errc::Io:
    case Errc::NotFound:  // the shell itself is missing
      return 503;
    default:
      return 500;
  }
}

}  // namespace

void add_terminal_routes(AgentRouter& router, const std::shared_ptr<AgentState>& state) {
  std::shared_ptr<AgentState> s = state;

  // The body is ignored, as in the reference (needs_body false: the server discards it).
  router.add("POST", "/api/terminals", {false, [s](AgentRequest& r) {
               if (!s->terminals) return send_terminal_error(*r.exchange, 503, "Terminals are unavailable");
               FileContext ctx = make_file_context(s->cwds, s->home, session_id(r));
               CreateSessionOptions options;
               options.id = std::string(session_id(r));
               options.cwd = get_cwd(ctx).cwd;
               auto created = s->terminals->create_session(options);
               if (!created && created.error().code == Errc::NotFound && options.cwd != ctx.home) {
                 options.cwd = ctx.home;  // the session's directory was removed meanwhile
                 created = s->terminals->create_session(std::move(options));
               }
               if (!created) {
                 const Error& e = created.error();
                 return send_terminal_error(*r.exchange, create_error_status(e), e.message);
               }
               JsonWriter w;
               write_session(w, *created);
               send_json(*r.exchange, 200, w.take());
             }});

  router.add("GET", "/api/terminals", {false, [s](AgentRequest& r) {
               JsonWriter w;
               w.array();
               if (s->terminals) {
                 for (const SessionInfo& info : s->terminals->list()) write_session(w, info);
               }
               send_json(*r.exchange, 200, w.end_array().take());
             }});

  router.add("GET", "/api/terminals/{id}", {false, [s](AgentRequest& r) {
               auto info = s->terminals ? s->terminals->get(r.params.get("id"))
                                        : Result<SessionInfo>(Error(Errc::NotFound, ""));
               if (!info) return send_terminal_error(*r.exchange, 404, kNotFound);
               JsonWriter w;
               write_session(w, *info);
               send_json(*r.exchange, 200, w.take());
             }});

  router.add("DELETE", "/api/terminals/{id}", {false, [s](AgentRequest& r) {
               if (!s->terminals || !s->terminals->destroy(r.params.get("id"))) {
                 return send_terminal_error(*r.exchange, 404, kNotFound);
               }
               send_json(*r.exchange, 200, R"({"status":"deleted"})");
             }});
}

}  // namespace terminals::detail
