#pragma once

/// @file server.hpp
/// `Server`: an HTTP/1.1 server on llhttp over TCP or a unix socket. Keep-alive, pipelining
/// (answers in order), streamed bodies with backpressure both ways, `Expect: 100-continue`,
/// upgrade hand-off, and limits that answer with the right status codes.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "terminals/endpoint.hpp"
#include "terminals/export.hpp"
#include "terminals/function.hpp"
#include "terminals/http.hpp"
#include "terminals/result.hpp"
#include "terminals/stream.hpp"

namespace terminals {

class Loop;

/// Limits and timeouts. A zero timeout disables it.
struct ServerOptions {
  Endpoint listen;                              ///< where to listen (TCP port 0 picks one)
  std::size_t max_header_bytes = 16 * 1024;     ///< request line + headers; over it: 431
  std::size_t max_headers = 100;                ///< header count; over it: 431
  std::uint64_t max_body_bytes = 256ull << 20;  ///< per request body; over it: 413
  std::chrono::milliseconds header_timeout{10'000};      ///< to receive a whole head: 408
  std::chrono::milliseconds keep_alive_timeout{60'000};  ///< idle between requests: close
  std::chrono::milliseconds body_idle_timeout{60'000};   ///< no body byte for this long: close
  std::size_t max_connections = 10'000;         ///< beyond it new connections get 503 and close
  std::size_t write_high_watermark = 256 * 1024;  ///< per connection, see `ServerExchange::write`
  int unix_socket_mode = 0600;                  ///< permissions of a unix socket we create
};

/// One request and its response. Handed to the request handler as a `shared_ptr`, so an
/// asynchronous handler can keep it; once the client is gone or the response has ended, every
/// method is a harmless no-op (writes return false) and `aborted()` / `ended()` say so.
class TERMINALS_API ServerExchange {
 public:
  virtual ~ServerExchange() = default;

  /// The parsed request head. Stays valid as long as the exchange object.
  virtual const RequestHead& request() const = 0;
  /// The client's address ("127.0.0.1:5000", or "unix").
  virtual const std::string& peer() const = 0;

  /// Starts delivering the request body; may be called later than the handler (bytes that
  /// arrive first wait, at most one read's worth: the socket is not read meanwhile). For
  /// `Expect: 100-continue`, this is when the interim 100 response is sent. A body nobody reads
  /// is discarded (up to the body limit) once the response ends. `on_end` gets `LimitExceeded`
  /// (and the client a 413) past `max_body_bytes`, `InvalidArgument` for a malformed body,
  /// `Eof` when the client goes away, `Timeout` after `body_idle_timeout`, and `Cancelled` when
  /// the response ended before the body was read or the exchange is already over.
  virtual void read_body(BodyHandlers handlers) = 0;
  /// Stops and restarts reading the body from the socket (backpressure towards the client).
  virtual void pause_body() = 0;
  virtual void resume_body() = 0;

  /// Sends the status line and headers. Without `Content-Length` the body is sent chunked
  /// (HTTP/1.1) or delimited by closing (HTTP/1.0). Hop-by-hop framing headers are ours
  /// (`Connection`, `Keep-Alive`, `Transfer-Encoding`, `Content-Length`); headers containing
  /// CR or LF are dropped. A 1xx is not a final response and goes out as 500 (100 Continue is
  /// automatic, 101 goes through `take_upgrade`). The head is held until the first body bytes
  /// or the next loop iteration, so that head and body leave in one write.
  virtual bool write_head(const ResponseHead& head) = 0;
  /// Sends body bytes. Returns false when the connection's write queue is above the high
  /// watermark: wait for the drain handler before writing more. Bytes past a `Content-Length`
  /// are dropped; ending short of it closes the connection after the response.
  virtual bool write(std::string_view data) = 0;
  virtual void set_drain_handler(MoveOnlyFunction<void()> on_drain) = 0;
  /// Finishes the response. Without `write_head`, sends 200 with `Content-Length` of `last_data`.
  virtual void end(std::string_view last_data = {}) = 0;
  /// Convenience: head, body and end in one call; sets Content-Length.
  virtual void respond(int status, Headers headers, std::string_view body) = 0;

  /// Runs once if the client goes away (or the server closes) before the response ended, from
  /// the next loop iteration. The client counts as gone when it closes or resets the connection
  /// before the response ended (as nginx and Go see it) or a write fails. Set after the abort
  /// already happened, the handler still runs once.
  virtual void on_abort(MoveOnlyFunction<void()> handler) = 0;
  /// Adds a header to whatever response this exchange sends (through `respond` or
  /// `write_head`), unless the response sets that header itself. For cross-cutting headers
  /// (CORS, request ids) decided before the route runs. No effect once the head was written.
  virtual void add_response_header(std::string name, std::string value) = 0;
  virtual bool aborted() const = 0;
  virtual bool ended() const = 0;

  /// For an upgrade request (`request().upgrade`): takes the connection out of HTTP. The caller
  /// owns the stream and writes the 101 (or anything else) itself; `leftover` receives the bytes
  /// the client sent after the request head. Returns null if not an upgrade, if a response head
  /// was written, or if the exchange is over. Answering an upgrade request normally closes the
  /// connection after the response.
  virtual StreamPtr take_upgrade(std::string& leftover) = 0;

  virtual Loop& loop() const = 0;
};

using ServerExchangePtr = std::shared_ptr<ServerExchange>;
/// Called for each request once its head is parsed, in order per connection.
using RequestHandler = MoveOnlyFunction<void(ServerExchangePtr)>;

class TERMINALS_API Server {
 public:
  /// Binds and starts listening. A unix socket path that exists and does not answer is replaced;
  /// one that answers gives `AlreadyExists`.
  static Result<std::unique_ptr<Server>> create(Loop& loop, ServerOptions options,
                                                RequestHandler handler);
  /// Closes the listener and every connection at once.
  virtual ~Server() = default;

  /// The bound endpoint, with the real port when 0 was asked for.
  virtual Endpoint local_endpoint() const = 0;
  /// Stops accepting, closes idle connections, lets in-flight exchanges finish (up to `grace`,
  /// then closes them), then calls `done` (once per call, never synchronously).
  virtual void shutdown(std::chrono::milliseconds grace, Callback<void> done) = 0;
  /// Open connections, idle or busy (including those answered with 503 or being closed).
  virtual std::size_t connection_count() const = 0;
};

using ServerPtr = std::unique_ptr<Server>;

}  // namespace terminals
