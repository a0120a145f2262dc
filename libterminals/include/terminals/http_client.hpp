#pragma once

/// @file http_client.hpp
/// `HttpClient`: the data plane's HTTP/1.1 client. A keep-alive pool per upstream (TCP
/// host:port or unix socket), streamed bodies both ways, connect and read timeouts, and upgrade
/// hand-off. A connection returns to the pool only when its exchange ended cleanly: request
/// fully sent, response fully read, keep-alive on both sides, no bytes after the response.
///
/// A request that fails on a reused connection before any response byte arrived (the server
/// closed it while it sat idle) is sent once more on a fresh connection, if its method is
/// idempotent (GET, HEAD, OPTIONS, TRACE, PUT, DELETE) and it went out whole in one write (no
/// body, or a body given entirely to `end()` before the head was sent, as `fetch()` does).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "terminals/endpoint.hpp"
#include "terminals/export.hpp"
#include "terminals/function.hpp"
#include "terminals/http.hpp"
#include "terminals/result.hpp"
#include "terminals/stream.hpp"

namespace terminals {

class Loop;

struct ClientOptions {
  std::chrono::milliseconds connect_timeout{5'000};  ///< 0: no limit
  /// No byte received for this long while the response is awaited (once the request was sent)
  /// or its body is being read: `Timeout`. Not counted while the consumer pauses the body.
  /// 0: no limit.
  std::chrono::milliseconds read_timeout{60'000};
  /// Pooled idle connections are closed after this long; 0: never.
  std::chrono::milliseconds idle_timeout{30'000};
  /// Idle connections kept per upstream; beyond, the oldest closes. 0: no pooling.
  std::size_t max_idle_per_upstream = 64;
  std::size_t max_response_header_bytes = 64 * 1024;  ///< larger heads are `UpstreamProtocol`
  std::size_t write_high_watermark = 256 * 1024;   ///< request bytes queued before write() is false
  /// Batchable requests (see `RequestOptions`) to one upstream that start in the same loop
  /// iteration go out together, up to this many: on one connection, in one write, the
  /// responses read back in order (HTTP/1.1 pipelining). That saves the server and us a
  /// system call or more per request when many arrive at once. 1: never.
  std::size_t max_batch = 1;
};

struct RequestOptions {
  /// The request may share a connection and a write with other batchable requests (see
  /// `ClientOptions::max_batch`). Only honoured for GET and HEAD without a body or an
  /// upgrade, and meant for requests the server answers at once: an answer that takes long
  /// delays those batched behind it. If their connection fails before they are answered,
  /// they are sent once more on another (they are idempotent), then fail.
  bool batchable = false;
};

/// One request on the client side. The request body is written with `write()` / `end()`; the
/// response head arrives in the callback given to `HttpClient::request`, then the body through
/// `read_body()`. Dropping the last reference, or `cancel()`, aborts the exchange and closes its
/// connection (it is never reused).
class TERMINALS_API ClientExchange {
 public:
  virtual ~ClientExchange() = default;

  /// Sends request body bytes. Returns false above the write high watermark: wait for the
  /// drain handler. Body framing follows the head: Content-Length if set, else chunked. Once
  /// the exchange is over (failed, cancelled, answered before the body was done) or the body
  /// is complete, bytes are dropped and true is returned; writing more than the Content-Length
  /// fails the exchange with `InvalidArgument`.
  virtual bool write(std::string_view data) = 0;
  virtual void set_drain_handler(MoveOnlyFunction<void()> on_drain) = 0;
  /// Ends the request body (a no-op for requests sent complete). With Content-Length framing
  /// the body must have exactly that length, else the exchange fails with `InvalidArgument`.
  virtual void end(std::string_view last_data = {}) = 0;

  /// Delivers the response body: usually called from the head callback; body bytes that came
  /// earlier are kept (one read's worth, reading stops meanwhile) and delivered later, never
  /// inside this call. `on_end` runs once: success, or the error that cut the body short.
  virtual void read_body(BodyHandlers handlers) = 0;
  /// Backpressure towards the upstream: no `on_data` until resumed, and the socket is not
  /// read meanwhile. Safe to call from inside `on_data`.
  virtual void pause_body() = 0;
  virtual void resume_body() = 0;

  /// After a 101 response: the raw connection, and in `leftover` the bytes the upstream sent
  /// after its response head. Null if there was no 101.
  virtual StreamPtr take_upgrade(std::string& leftover) = 0;

  /// Aborts: pending callbacks complete with `Cancelled`; the connection is closed.
  virtual void cancel() = 0;
};

using ClientExchangePtr = std::shared_ptr<ClientExchange>;

/// A whole response, for small bodies read into memory.
struct FetchResponse {
  ResponseHead head;
  std::string body;
};

class TERMINALS_API HttpClient {
 public:
  static std::unique_ptr<HttpClient> create(Loop& loop, ClientOptions options = {});
  /// Closes pooled connections; exchanges in flight complete with `Cancelled`. A connect still
  /// in progress runs to its end (at most `connect_timeout`) and its socket is then closed.
  virtual ~HttpClient() = default;

  /// Starts a request to `upstream`. `on_response` runs once with the response head (1xx
  /// interim responses other than 101 are skipped) or the error: `Timeout`, `Io`,
  /// `UpstreamProtocol`, `Cancelled`, or `InvalidArgument` for a head that cannot be sent
  /// safely (CR/LF in a value, both Content-Length and Transfer-Encoding). `Host` is added if
  /// missing ("localhost" for a unix socket). Requests whose method carries no body (GET, HEAD,
  /// DELETE, OPTIONS, TRACE without Content-Length) are sent complete; others wait for `end()`.
  ClientExchangePtr request(const Endpoint& upstream, const RequestHead& head,
                            Callback<ResponseHead> on_response) {
    return request(upstream, head, RequestOptions{}, std::move(on_response));
  }
  /// The same with options. The head is only read (serialised at once), never kept.
  virtual ClientExchangePtr request(const Endpoint& upstream, const RequestHead& head,
                                    RequestOptions options, Callback<ResponseHead> on_response) = 0;

  /// Convenience: sends `body` (with Content-Length, unless it is empty on a method without a
  /// body), reads the whole response up to `max_body` bytes (`LimitExceeded` beyond, and the
  /// connection is closed).
  virtual void fetch(const Endpoint& upstream, RequestHead head, std::string body,
                     Callback<FetchResponse> done, std::size_t max_body = 16 << 20) = 0;

  /// Idle pooled connections, over all upstreams.
  virtual std::size_t idle_connection_count() const = 0;
  /// Connections ever opened (for tests and metrics: reuse keeps it flat).
  virtual std::uint64_t connections_opened() const = 0;
};

using HttpClientPtr = std::unique_ptr<HttpClient>;

}  // namespace terminals
