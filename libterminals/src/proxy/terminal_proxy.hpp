#pragma once

// The data plane: carries one user's HTTP requests and terminal WebSockets to the agent of
// their terminal (orchestrator-reference.md §3), after the caller has authenticated the user
// and resolved the terminal.
//
// HTTP (`forward`): bodies stream both ways with backpressure (a large upload or download
// costs a few socket buffers, not its size); hop-by-hop headers are dropped both ways; the
// caller's credential is replaced with the terminal's key; the orchestrator's own headers
// (X-User-Id, X-Terminal-Context-Id) and the browser's cookies never reach the sandbox;
// X-Forwarded-For/-Proto/-Host/-Prefix are added. Failures answer {"detail": "..."}:
//   502  the agent refused or reset the connection, or spoke broken HTTP
//   503  the terminal is starting and its agent did not accept within `retry_connect_for`,
//        or `on_unreachable` could not find it a new one (its reason given)
//   504  connect timeout, or no byte either way for `idle_timeout`
// A client that leaves cancels the upstream exchange. Nothing is replayed after the agent may
// have seen it: a connect that was refused never reached the agent, so only such attempts are
// retried, and only for requests without a body or with one of at most 64 KiB, which is kept
// until the response starts (a larger or chunked body streams from the first attempt).
// Known limit: an upstream failure in the middle of a chunked response ends it as if complete
// (ServerExchange has no way to abort a response); with Content-Length the client sees the
// truncation.
//
// WebSocket (`forward_websocket`): the reference's first-message protocol (§2.1). We answer
// the client's handshake, read its first message (a text {"type":"auth","token":...} within
// 10 s, at most 64 KiB, else close 4001), have the caller check the token or resolve the
// terminal (up to 180 s, as that may start it; a client that leaves meanwhile is noticed),
// then connect to the agent, send it {"type":"auth","token":<terminal key>} followed by
// whatever the client sent after its auth message, and from then on copy bytes both ways
// unparsed except for frame boundaries (followed so that a close frame can be inserted
// cleanly). Close codes from either side pass through. Agent unreachable or rejecting the
// handshake: 1014; agent gone without a close frame: 1011; unknown session on the agent:
// 4004; no byte either way for `idle_timeout`: 1001. When one side ends, the other is
// half-closed and the tunnel ends within 2 s.

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

#include "terminals/endpoint.hpp"
#include "terminals/function.hpp"
#include "terminals/loop.hpp"
#include "terminals/server.hpp"

namespace terminals::detail {

struct ProxyTarget {
  Endpoint endpoint;    ///< the terminal's agent
  std::string api_key;  ///< the agent's key; sent upstream only, never logged
};

struct ProxyOptions {
  std::chrono::milliseconds connect_timeout{5000};
  /// No byte either way for this long: 504 before the response head, else the exchange or
  /// tunnel is closed.
  std::chrono::milliseconds idle_timeout{300000};
  /// WebSocket tunnels open at once; beyond, upgrades get 503.
  std::size_t max_tunnels = 10000;
  /// Status polls to one terminal that arrive together (GET /health, /files/cwd,
  /// /execute/{id}/status without `wait`, ...: routes the agent answers at once) go to it
  /// pipelined, up to this many on one connection in one write. 1: never.
  std::size_t max_batch = 16;
};

struct ForwardOptions {
  /// Path and query to request on the agent, e.g. "/files/list?directory=.". Empty: the
  /// request's own target.
  std::string upstream_target;
  /// Sent as X-Forwarded-Prefix when not empty, e.g. "/p/dev".
  std::string forwarded_prefix;
  /// While the terminal is starting: refused connects (unix socket absent or refused, TCP
  /// refused) are retried for this long, for requests whose body is absent or kept (see
  /// above). Then 503.
  std::chrono::milliseconds retry_connect_for{0};
  /// Called on traffic, at most about once a second (keeps the terminal from idling out).
  MoveOnlyFunction<void()> on_activity;
  /// The agent could not be reached at all (connect refused or its socket gone, after
  /// `retry_connect_for`): its sandbox or container may have died, or its engine may be down.
  /// Asked once, for a fresh target. A target: the request is sent there (with
  /// `retry_connect_for` of 3 s, as the terminal may be new), unless its body was too large to
  /// keep (over 64 KiB, or chunked): that one gets 503 asking the client to send it again. An error: answered with
  /// `Error::native` as the HTTP status (503 if not 4xx/5xx) and its message.
  MoveOnlyFunction<void(MoveOnlyFunction<void(Result<ProxyTarget>)> done)> on_unreachable;
};

class TerminalProxy {
 public:
  struct WsOptions {
    /// Path and query on the agent, e.g. "/api/terminals/abc". Empty: the request's target.
    std::string upstream_target;
    /// As in ForwardOptions: retries refused connects to the agent for this long.
    std::chrono::milliseconds retry_connect_for{0};
    /// Called on traffic, at most about once a second.
    MoveOnlyFunction<void()> on_activity;
    /// The agent refused the connection or its socket is gone: the caller may want to re-check
    /// the terminal (the client is closed 1014; its PTY session died with the agent anyway,
    /// so the tunnel is not re-pointed).
    MoveOnlyFunction<void()> on_unreachable;
    /// Once the tunnel to the agent is up; `on_close` then runs once when it ends.
    MoveOnlyFunction<void()> on_open;
    MoveOnlyFunction<void()> on_close;
    /// Checks the token of the client's first message: done(true) continues, done(false)
    /// closes 4001 "Invalid token". One of this and `resolve_target` is required: without
    /// either every client is refused (fail closed).
    MoveOnlyFunction<void(std::string token, MoveOnlyFunction<void(bool)> done)> check_client_token;
    /// Instead of `check_client_token`, for callers that find the terminal only once the user
    /// is known: authenticates the token and resolves the terminal, replacing the `target`
    /// given to forward_websocket. An error closes the client with the WebSocket close code in
    /// `Error::native` (4000-4999 or 1000-1014; anything else becomes 4003) and
    /// `Error::message` as the reason. Takes precedence over `check_client_token`.
    MoveOnlyFunction<void(std::string token, MoveOnlyFunction<void(Result<ProxyTarget>)> done)> resolve_target;
  };

  static std::unique_ptr<TerminalProxy> create(Loop& loop, ProxyOptions options = {});
  /// Cancels exchanges in flight (their clients get 503 if nothing was sent yet) and closes
  /// every tunnel.
  virtual ~TerminalProxy() = default;

  /// Forwards one (non-upgrade) request and its response.
  virtual void forward(ServerExchangePtr exchange, const ProxyTarget& target,
                       ForwardOptions options) = 0;
  /// For an upgrade request (`exchange->request().upgrade`): tunnels a WebSocket to `target`.
  /// A malformed handshake gets 400 (426 for a version other than 13).
  virtual void forward_websocket(ServerExchangePtr exchange, const ProxyTarget& target,
                                 WsOptions options) = 0;
  /// WebSocket tunnels open now (including those still authenticating).
  virtual std::size_t open_tunnels() const = 0;
};

}  // namespace terminals::detail
