#pragma once

// Shared pieces of the agent's route layer (agent.cpp and agent_routes_*.cpp): the routed
// request, the state the routes share, FastAPI-compatible validation errors and the typed
// readers of query parameters and JSON bodies every route uses.

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "agent/files.hpp"
#include "agent/process_manager.hpp"
#include "agent/pty_sessions.hpp"
#include "http/router.hpp"
#include "http/url.hpp"
#include "json/json.hpp"
#include "terminals/function.hpp"
#include "terminals/http_client.hpp"
#include "terminals/loop.hpp"
#include "terminals/server.hpp"

namespace terminals::detail {

/// One routed request: the exchange, path parameters, the query (with "null" values dropped)
/// and, for routes that asked for it, the whole body.
struct AgentRequest : std::enable_shared_from_this<AgentRequest> {
  ServerExchangePtr exchange;
  RouteParams params;
  Query query;
  std::string body;
};

class TerminalSockets;

/// What the routes share. Owned by the agent; routes hold a shared_ptr so work that finishes
/// off the loop can still reach it, and check `alive` before touching the network.
struct AgentState {
  Loop* loop = nullptr;
  std::weak_ptr<bool> alive;  ///< expires when the agent is destroyed
  std::string home;
  std::string api_key;  ///< for the terminal WebSocket's first-message auth
  bool no_auth = false;
  std::string info;     ///< OPEN_TERMINAL_INFO: mounts /info and ends the system prompt
  SessionCwdStore cwds;
  FileOptions file_options;
  std::unique_ptr<ProcessManager> processes;  ///< /execute
  std::unique_ptr<PtySessions> terminals;     ///< /api/terminals
  /// Open terminal WebSockets (agent_terminal_socket.cpp); dropping it closes them. Declared
  /// after `terminals` so that it goes first.
  std::shared_ptr<TerminalSockets> terminal_sockets;
  std::unique_ptr<HttpClient> proxy_client;   ///< /proxy/{port}/..., created on first use
};

struct AgentRoute {
  bool needs_body = false;  ///< read the whole body (with the size cap) before the handler
  std::function<void(AgentRequest&)> handler;
};
using AgentRouter = Router<AgentRoute>;

/// Where commands run, for the system prompt and the run_command description.
struct HostFacts {
  std::string os = "Linux", kernel, arch, host;
  std::string user;   ///< empty when the uid has no account name
  std::string shell;  ///< $SHELL, else /bin/sh
};
HostFacts host_facts();

/// Sends `body` as application/json.
void send_json(ServerExchange& ex, int status, std::string_view body);
/// Sends {"detail": message}.
void send_detail(ServerExchange& ex, int status, std::string_view message);
/// Sends a file-layer error with its HTTP status.
void send_error(ServerExchange& ex, const Error& error);

/// Answers 200 with the JSON object `fill` writes from a successful result, or the result's
/// error as {"detail"} with its status.
template <class T, class Fill>
void send_result(AgentRequest& r, const Result<T>& result, Fill fill) {
  if (!result) return send_error(*r.exchange, result.error());
  JsonWriter w;
  w.object();
  fill(w, *result);
  send_json(*r.exchange, 200, w.end_object().take());
}

// ---------------------------------------------------------------------------------------------
// Validation errors in FastAPI/Pydantic v2's shape:
//   422 {"detail":[{"type":"missing","loc":["query","path"],"msg":"Field required","input":null}]}

/// One element of `loc`: a name ("query", "path", "body", a field) or an array index.
using LocPart = std::variant<std::string, std::int64_t>;

struct ValidationIssue {
  ValidationIssue(std::string type_, std::vector<LocPart> loc_, std::string msg_,
                  std::string input_json_ = "null", std::string ctx_json_ = {})
      : type(std::move(type_)), loc(std::move(loc_)), msg(std::move(msg_)),
        input_json(std::move(input_json_)), ctx_json(std::move(ctx_json_)) {}
  std::string type;        ///< Pydantic's error type: missing, int_parsing, ...
  std::vector<LocPart> loc;
  std::string msg;
  std::string input_json;  ///< the offending input, as JSON
  std::string ctx_json;    ///< a JSON object, or empty for none
};

/// 422 with the issue as the only item of "detail".
void send_validation_error(ServerExchange& ex, const ValidationIssue& issue);

/// The request's X-Session-Id, or "".
std::string_view session_id(const AgentRequest& r);

/// Bounds for numeric parameters (Pydantic's ge/le, and gt for `wait`-style floats).
struct Bounds {
  std::optional<double> ge;
  std::optional<double> le;
};

// Query readers. Each returns false after sending a 422 (the handler then just returns);
// `out` is left empty when the parameter is absent and has no default.
bool required_query(AgentRequest& r, std::string_view name, std::string_view& out);
bool int_query(AgentRequest& r, std::string_view name, std::optional<std::int64_t>& out,
               Bounds bounds = {});
bool float_query(AgentRequest& r, std::string_view name, std::optional<double>& out,
                 Bounds bounds = {});
/// Pydantic's lax booleans: true/false, 1/0, yes/no, on/off, t/f, y/n (any case).
bool bool_query(AgentRequest& r, std::string_view name, bool& out);

// JSON body readers. json_body sends 422 for a missing, malformed or non-object body.
std::optional<rapidjson::Document> json_body(AgentRequest& r);
/// A required string member of `obj`; `loc` is where `obj` sits ({"body"} at the top).
bool required_string(AgentRequest& r, const rapidjson::Value& obj, const char* name,
                     std::string_view& out, std::vector<LocPart> loc = {"body"});
/// An optional string member (absent or null leaves `out` empty).
bool optional_string(AgentRequest& r, const rapidjson::Value& obj, const char* name,
                     std::optional<std::string_view>& out, std::vector<LocPart> loc = {"body"});

// ---------------------------------------------------------------------------------------------

/// What a blocking job hands back to the loop thread: it sends the response.
using Responder = MoveOnlyFunction<void(AgentRequest&)>;
/// Runs `work` on libuv's thread pool (file system calls block), then its responder on the
/// loop thread, unless the agent is gone by then. The state stays alive while the work runs.
void run_off_loop(const std::shared_ptr<AgentState>& state, AgentRequest& request,
                  MoveOnlyFunction<Responder()> work);

// Route groups, one file each.
/// /files/* (agent_routes_files.cpp).
void add_file_routes(AgentRouter& router, const std::shared_ptr<AgentState>& state);
/// /execute* (agent_routes_execute.cpp).
void add_execute_routes(AgentRouter& router, const std::shared_ptr<AgentState>& state);
/// /api/terminals REST (agent_routes_terminals.cpp).
void add_terminal_routes(AgentRouter& router, const std::shared_ptr<AgentState>& state);
/// /ports and /proxy/{port}/{path...} (agent_routes_ports.cpp).
void add_port_routes(AgentRouter& router, const std::shared_ptr<AgentState>& state);
/// /info and /openapi.json (agent_routes_openapi.cpp).
void add_openapi_routes(AgentRouter& router, const std::shared_ptr<AgentState>& state);

/// A WebSocket upgrade of /api/terminals/{id} (agent_terminal_socket.cpp). It is not
/// key-checked by the HTTP layer: the first message authenticates.
void handle_terminal_upgrade(const std::shared_ptr<AgentState>& state, ServerExchangePtr exchange,
                             std::string session_id);

}  // namespace terminals::detail
