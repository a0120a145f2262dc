#pragma once

// The HTTP/1.1 client behind HttpClient: a keep-alive pool per upstream, one ExchangeImpl per
// request, and the Connection (socket + response parser + timer) that an exchange borrows from
// the pool or opens, and gives back only when the exchange ended cleanly. Batchable requests
// that start together share one connection (ClientOptions::max_batch): the first owns it, the
// others wait in its queue and take it in turn as the answers come back in order.
//
// Lifetime, in short:
// - A Connection is owned by exactly one of: an exchange (busy, then handed to the next queued
//   one), the client's pool (idle), the client's sinks (reading and dropping the answer of a
//   queued request nobody waits for), or a deferred delete (closed). It is never freed
//   synchronously, so its socket and parser may be closed from inside their own callbacks.
// - An exchange is a shared_ptr owned by the user. Every entry from the event loop (read, timer,
//   drain, deferred task, connect) holds a strong reference for its duration, so a user callback
//   may drop the last reference or cancel without freeing the code that called it.
// - Failures are always delivered from a deferred task; success (head, body, end) directly.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "http/parser.hpp"
#include "terminals/http_client.hpp"
#include "terminals/loop.hpp"

namespace terminals::detail {

class ClientImpl;
class ExchangeImpl;

/// How the request body goes on the wire.
enum class BodyFraming {
  None,     // no body: the request is complete after its head
  Length,   // Content-Length bytes
  Chunked,  // Transfer-Encoding: chunked
};

/// What serialize_request() learned from the head.
struct RequestPlan {
  BodyFraming framing = BodyFraming::None;
  std::uint64_t length = 0;  // BodyFraming::Length only
  bool keep_alive = true;    // the request did not say `Connection: close`
  bool idempotent = false;   // safe to send again after a stale keep-alive connection
  bool is_head = false;      // the response has no body whatever its headers say
};

/// Appends `head`, as sent to `upstream`, to `out`: the request line, the headers, `Host` if
/// missing and `Transfer-Encoding: chunked` when a body-carrying method has no Content-Length.
/// Rejects heads that could not be sent safely (CR/LF in values, conflicting framing).
Result<RequestPlan> serialize_request(const RequestHead& head, const Endpoint& upstream,
                                      std::string& out);
/// Whether `method` is sent without a body unless the head gives a Content-Length.
bool method_without_body(std::string_view method) noexcept;
/// Appends a chunk-size line ("1f40\r\n").
void append_chunk_header(std::string& out, std::size_t size);
/// The pool key for an upstream: "host:port" or "unix:/path".
std::string upstream_key(const Endpoint& upstream);

/// A batched request waiting on a connection for its answer (see ClientOptions::max_batch).
struct QueuedRequest {
  std::weak_ptr<ExchangeImpl> exchange;  // expired or failed: its answer is read and dropped
  bool is_head = false;                  // that answer has no body whatever its headers say
};

/// A socket to an upstream with its response parser and a timer (read timeout while busy,
/// idle timeout while pooled).
class Connection final : public HttpParser::Listener {
 public:
  Connection(Loop& loop, StreamPtr stream, std::string key, HttpParser::Limits limits);
  ~Connection() override;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  /// Installs the read and drain handlers (once, for the connection's whole life).
  void start();
  /// Closes the socket and stops the timer; the object itself is freed through discard().
  void close();
  /// Hands the socket over (after an upgrade), with handlers that no longer reach this object.
  StreamPtr take_stream();

  Stream& stream() { return *stream_; }
  HttpParser& parser() { return parser_; }
  const std::string& key() const { return key_; }

 private:
  friend class ExchangeImpl;
  friend class ClientImpl;
  friend void discard(Loop& loop, std::unique_ptr<Connection> conn);
  friend void pass_turn(Loop& loop, std::unique_ptr<Connection> conn, std::string_view leftover);

  bool on_response_head(ResponseHead&& head) override;
  void on_body(std::string_view data) override;
  void on_message_complete() override;
  void on_read(Result<std::string_view> r);
  void on_timer();
  /// The timer fired: if a byte came within `timeout`, waits out the rest and says true.
  bool rearm_if_read_within(std::chrono::milliseconds timeout);
  void on_drain();

  Loop& loop_;
  StreamPtr stream_;
  HttpParser parser_;
  std::unique_ptr<Timer> timer_;
  std::string key_;
  ExchangeImpl* owner_ = nullptr;  // the exchange using it, if busy
  ClientImpl* pool_ = nullptr;     // the client whose pool holds it, if idle
  // The client holding it while it reads, and drops, the answer to a batched request whose
  // exchange is gone or cancelled (so the answers behind it still arrive in order).
  ClientImpl* sink_for_ = nullptr;
  bool sink_is_head_ = false;
  // Batched requests written after the owner's, in the order their answers come.
  std::deque<QueuedRequest> queue_;
  bool batch_open_ = false;        // the owner's write, the queue's requests in it, is still to go
  std::uint64_t last_read_ms_ = 0;
  std::uint64_t exchanges_ = 0;    // requests started on it: > 0 means a reused connection
  bool timer_armed_ = false;
};

/// Closes `conn` now and frees it in the next loop iteration. Batched requests still queued on
/// it are sent again elsewhere or fail (ExchangeImpl::connection_lost).
void discard(Loop& loop, std::unique_ptr<Connection> conn);
/// After an answer on `conn`, the next queued request takes the connection, with the bytes that
/// followed that answer in the same read.
void pass_turn(Loop& loop, std::unique_ptr<Connection> conn, std::string_view leftover);

class ExchangeImpl final : public ClientExchange,
                           public std::enable_shared_from_this<ExchangeImpl> {
 public:
  ExchangeImpl(ClientImpl& client, const Endpoint& upstream, Callback<ResponseHead> on_response);
  ~ExchangeImpl() override;

  /// Serialises the head and starts on an idle or new connection, or joins the batch open
  /// for the same upstream.
  void start(const RequestHead& head, bool batchable);

  bool write(std::string_view data) override;
  void set_drain_handler(MoveOnlyFunction<void()> on_drain) override;
  void end(std::string_view last_data) override;
  void read_body(BodyHandlers handlers) override;
  void pause_body() override;
  void resume_body() override;
  StreamPtr take_upgrade(std::string& leftover) override;
  void cancel() override;

  /// The client is going away: fail with Cancelled and forget it.
  void client_destroyed();
  /// Queued on a connection that is being discarded: `sent` says whether our request went out.
  void connection_lost(bool sent);
  /// Our answer is next on `conn` (handed over after the previous one).
  void take_turn(std::unique_ptr<Connection> conn, std::string_view leftover);
  bool failed() const { return failed_; }

  /// A strong reference held by the library while it runs code on the exchange (an event, a
  /// deferred task), counted so that a user dropping theirs can be told apart.
  class Guard {
   public:
    explicit Guard(std::shared_ptr<ExchangeImpl> self) : self_(std::move(self)) {
      ++self_->guards_;
    }
    ~Guard() { --self_->guards_; }
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;
    ExchangeImpl* operator->() const { return self_.get(); }

   private:
    std::shared_ptr<ExchangeImpl> self_;
  };

 private:
  friend class Connection;
  friend class ClientImpl;

  // Events from the connection; the caller holds a strong reference to this exchange.
  void on_conn_read(Result<std::string_view> r);
  void on_conn_error(Error error);
  bool on_head(ResponseHead&& head);
  void on_body(std::string_view data);
  void on_read_timer();
  void on_conn_drain();

  void connect();
  void dispatch();
  void join(ExchangeImpl& owner);
  void on_connected(Result<StreamPtr> r);
  void attach(std::unique_ptr<Connection> conn, bool may_call_user);
  void flush(bool may_call_user);
  void schedule_flush();
  void send_body(std::string_view data, bool last);
  bool above_watermark() const;
  void finish_response(bool clean, std::string_view rest);
  void on_upgrade(std::string_view rest);
  void retry();
  void fail(Error error);
  void dispatch_body();
  void schedule_dispatch();
  void update_reading();
  void check_abandoned();
  void arm_read_timer();
  void disarm_read_timer();
  std::string describe() const;

  Loop& loop_;
  ClientImpl* client_;  // null once the client is destroyed
  ClientOptions options_;
  Endpoint upstream_;
  std::string key_;
  std::unique_ptr<Connection> conn_;

  Callback<ResponseHead> on_response_;  // set until the head or an error was delivered
  BodyHandlers body_;
  MoveOnlyFunction<void()> drain_;

  std::string out_;      // request bytes waiting for a connection or the deferred flush
  std::string replay_;   // the whole request as first sent, to retry after a stale connection
  std::string pending_;  // response body received while the consumer was not reading
  std::string leftover_;                // bytes after a 101 response head
  std::optional<ResponseHead> upgrade_head_;
  Status end_status_;                   // the body's outcome once end_ready_
  std::uint64_t body_left_ = 0;         // Content-Length framing: request bytes still to come

  BodyFraming framing_ = BodyFraming::None;
  bool request_keep_alive_ = true;
  bool idempotent_ = false;
  bool is_head_ = false;
  bool request_complete_ = false;  // the whole request is in out_ or was handed to the socket
  bool head_flushed_ = false;
  bool flush_scheduled_ = false;
  bool dispatch_scheduled_ = false;
  bool want_drain_ = false;
  bool reused_ = false;
  bool retried_ = false;
  bool got_bytes_ = false;         // a response byte arrived on the current connection
  bool head_received_ = false;
  bool message_complete_ = false;
  bool reading_ = false;           // read_body() was called
  bool paused_ = false;
  bool end_ready_ = false;
  bool end_delivered_ = false;
  bool upgraded_ = false;
  bool finished_ = false;          // the response was fully read (or handed over)
  bool failed_ = false;
  bool batchable_ = false;         // may open a batch that others join
  bool parsing_ = false;           // inside our connection's parser (its callbacks run)
  std::size_t batch_size_ = 0;     // requests in the batch we opened, ours included

  long guards_ = 0;                // live Guards (the library's own references)
  ExchangeImpl* prev_ = nullptr;   // the client's list of live exchanges
  ExchangeImpl* next_ = nullptr;
};

class ClientImpl final : public HttpClient {
 public:
  ClientImpl(Loop& loop, ClientOptions options);
  ~ClientImpl() override;

  using HttpClient::request;
  ClientExchangePtr request(const Endpoint& upstream, const RequestHead& head, RequestOptions request_options,
                            Callback<ResponseHead> on_response) override;
  void fetch(const Endpoint& upstream, RequestHead head, std::string body,
             Callback<FetchResponse> done, std::size_t max_body) override;
  std::size_t idle_connection_count() const override { return idle_count_; }
  std::uint64_t connections_opened() const override { return opened_; }

  Loop& loop() const { return loop_; }
  const ClientOptions& options() const { return options_; }
  HttpParser::Limits parser_limits() const;

  /// The most recently pooled idle connection to `key`, or null.
  std::unique_ptr<Connection> take_idle(const std::string& key);
  /// Pools a connection whose exchange ended cleanly (or closes it if the pool is full).
  void release(std::unique_ptr<Connection> conn);
  /// Removes an idle connection that closed, sent unsolicited bytes or expired.
  void drop_idle(Connection* conn);
  void count_opened() { ++opened_; }
  bool destroying() const { return destroying_; }
  /// The exchange whose batch to `key` is still open (its write not yet made), or null.
  ExchangeImpl* open_batch(const std::string& key) const;
  void set_open_batch(const std::string& key, ExchangeImpl* owner) { open_batches_[key] = owner; }
  void close_batch(const std::string& key, const ExchangeImpl* owner);
  /// Holds `conn` while it drops the answer to a batched request nobody waits for any more.
  void sink(std::unique_ptr<Connection> conn, bool is_head, std::string_view leftover);
  void on_sink_read(Connection* conn, Result<std::string_view> r);
  void on_sink_timer(Connection* conn);
  void link(ExchangeImpl* exchange);
  void unlink(ExchangeImpl* exchange);

 private:
  Loop& loop_;
  ClientOptions options_;
  // LIFO per upstream: the most recently used connection is the least likely to have been
  // closed by the server's own idle timeout.
  std::unordered_map<std::string, std::vector<std::unique_ptr<Connection>>> idle_;
  std::size_t idle_count_ = 0;
  std::uint64_t opened_ = 0;
  ExchangeImpl* exchanges_ = nullptr;
  std::unordered_map<std::string, ExchangeImpl*> open_batches_;
  std::vector<std::unique_ptr<Connection>> sinks_;
  bool destroying_ = false;

  std::unique_ptr<Connection> take_sink(Connection* conn);
};

}  // namespace terminals::detail
