#pragma once

/// @file http_client.hpp
/// `HttpClient`: the data plane's HTTP/1.1 client. A keep-alive pool per upstream (TCP
/// host:port or unix socket), streamed bodies both ways, connect and read timeouts, and upgrade
/// hand-off. A connection returns to the pool only when its exchange ended cleanly.

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

struct ClientOptions {
  std::chrono::milliseconds connect_timeout{5'000};
  std::chrono::milliseconds read_timeout{60'000};   ///< no response byte for this long: Timeout
  std::chrono::milliseconds idle_timeout{30'000};   ///< pooled idle connections are closed after
  std::size_t max_idle_per_upstream = 64;
  std::size_t max_response_header_bytes = 64 * 1024;
  std::size_t write_high_watermark = 256 * 1024;
};

/// One request on the client side. The request body is written with `write()` / `end()`; the
/// response head arrives in the callback given to `HttpClient::request`, then the body through
/// `read_body()`. Dropping the last reference, or `cancel()`, aborts the exchange and closes its
/// connection (it is never reused).
class TERMINALS_API ClientExchange {
 public:
  virtual ~ClientExchange() = default;

  /// Sends request body bytes. Returns false above the write high watermark: wait for the
  /// drain handler. Body framing follows the head: Content-Length if set, else chunked.
  virtual bool write(std::string_view data) = 0;
  virtual void set_drain_handler(MoveOnlyFunction<void()> on_drain) = 0;
  /// Ends the request body.
  virtual void end(std::string_view last_data = {}) = 0;

  /// Delivers the response body (call after the head arrived).
  virtual void read_body(BodyHandlers handlers) = 0;
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
  /// Closes pooled connections; exchanges in flight complete with `Cancelled`.
  virtual ~HttpClient() = default;

  /// Starts a request to `upstream`. `on_response` runs once with the response head (1xx
  /// interim responses other than 101 are skipped) or the error: `Timeout`, `Io`,
  /// `UpstreamProtocol`, `Cancelled`. Requests whose method carries no body (GET, HEAD, DELETE
  /// without Content-Length) are sent complete; others wait for `end()`.
  virtual ClientExchangePtr request(const Endpoint& upstream, RequestHead head,
                                    Callback<ResponseHead> on_response) = 0;

  /// Convenience: sends `body`, reads the whole response up to `max_body` bytes
  /// (`LimitExceeded` beyond).
  virtual void fetch(const Endpoint& upstream, RequestHead head, std::string body,
                     Callback<FetchResponse> done, std::size_t max_body = 16 << 20) = 0;

  /// Idle pooled connections, over all upstreams.
  virtual std::size_t idle_connection_count() const = 0;
  /// Connections ever opened (for tests and metrics: reuse keeps it flat).
  virtual std::uint64_t connections_opened() const = 0;
};

using HttpClientPtr = std::unique_ptr<HttpClient>;

}  // namespace terminals
