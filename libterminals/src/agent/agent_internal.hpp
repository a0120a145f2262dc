#pragma once

// Shared pieces of the agent's route layer (agent.cpp and agent_routes_*.cpp).

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "agent/files.hpp"
#include "http/router.hpp"
#include "http/url.hpp"
#include "terminals/function.hpp"
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

/// What the routes share: the agent's home and the session working directories.
struct AgentState {
  Loop* loop = nullptr;
  std::weak_ptr<bool> alive;  ///< expires when the agent is destroyed
  std::string home;
  SessionCwdStore cwds;
  FileOptions file_options;
};

struct AgentRoute {
  bool needs_body = false;  ///< read the whole body (with the size cap) before the handler
  std::function<void(AgentRequest&)> handler;
};
using AgentRouter = Router<AgentRoute>;

/// Sends `body` as application/json.
void send_json(ServerExchange& ex, int status, std::string_view body);
/// Sends {"detail": message}.
void send_detail(ServerExchange& ex, int status, std::string_view message);
/// Sends a file-layer error with its HTTP status.
void send_error(ServerExchange& ex, const Error& error);

/// What a blocking job hands back to the loop thread: it sends the response.
using Responder = MoveOnlyFunction<void(AgentRequest&)>;
/// Runs `work` on libuv's thread pool (file system calls block), then its responder on the
/// loop thread, unless the agent is gone by then. The state stays alive while the work runs.
void run_off_loop(const std::shared_ptr<AgentState>& state, AgentRequest& request,
                  MoveOnlyFunction<Responder()> work);

/// Registers the /files/* routes.
void add_file_routes(AgentRouter& router, const std::shared_ptr<AgentState>& state);

}  // namespace terminals::detail
